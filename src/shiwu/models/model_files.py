"""What a user's model file is, how to load it, and the facts shiwu needs about it.

Kinds: ``pickle`` (a whole ``nn.Module`` saved with ``torch.save(model)``: loading it runs code
from the file, so only with ``trust_model_code``), ``torchscript`` (``torch.jit.save``, e.g.
the article's ``traced_model_cpu.pt``), ``onnx`` and ``openvino`` (IR ``.xml`` + ``.bin``).
A bare state dict has weights but no architecture and is refused with what to pass instead.

The facts (kind, number of classes, which output is the logits, a fixed input size) are found
once per file content and remembered in the cache, so a later start with a cached ONNX export
imports neither torch nor the model's code.
"""

from __future__ import annotations

import json
import pickle
import sys
import warnings
import zipfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from .outputs import flat_outputs, pick_logits
from .spec import ModelNotFound, UntrustedModel

KINDS = ("pickle", "torchscript", "onnx", "openvino")
FACTS_VERSION = 4
PROBE_SIZE = 224
# The largest classifier shiwu takes: ModelScope's 万物识别 has 54,092 classes. A graph may
# declare any output size in a few bytes, and each class gets a label string: 10⁹ of them is
# 5.5 GB of placeholders before anything runs.
MAX_CLASSES = 1_000_000

SAVE_INSTEAD = ("save the model as TorchScript (torch.jit.trace(model, example).save('model.pt')) "
                "or ONNX (torch.onnx.export), which shiwu runs without unpickling code")


@dataclass(frozen=True)
class ModelFacts:
    kind: str
    num_classes: int
    output_index: int | None = None  # position of the logits among the outputs; None: the only one
    fixed_size: int | None = None    # the graph takes only this input size
    fixed_batch: int | None = None   # the graph takes only this batch size
    outputs: int = 1
    embedding_layer: str | None = None  # the nn.Linear giving the logits: its input is the embedding
    external_data: tuple[str, ...] = ()  # an ONNX file's weight files, relative to its folder


def kind_of(path: Path) -> str:
    """The file's kind, from its name and content, without running anything in it."""
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return "onnx"
    if suffix == ".xml":
        return "openvino"
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError) as exc:
            raise ModelNotFound(f"{path}: cannot read this model file ({exc})") from None
        # torch.jit.save archives carry the TorchScript code and constants; torch.save's do not
        if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
            return "torchscript"
    return "pickle"


# ----------------------------------------------------------------------------- torch files

def check_pickle(path: Path, trust_model_code: bool) -> None:
    """Refuse a state dict (no architecture); refuse a whole pickled module unless trusted."""
    import torch

    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError:
        if trust_model_code:
            return
        raise UntrustedModel(
            f"{path} is a whole pickled model (torch.save(model)){_classes_in(path)}. Unpickling "
            "it runs code from the file, so shiwu does not do it unless you say so: pass "
            "--trust-model-code (trust_model_code=True in Python) if you trust where it came from "
            "— the same idea as Hugging Face's trust_remote_code. Or " + SAVE_INSTEAD) from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError) as exc:
        raise ModelNotFound(f"{path}: cannot read this model file: it is truncated, corrupt or not "
                            f"a PyTorch file ({type(exc).__name__}: {_first_line(exc)})") from None
    if isinstance(loaded, dict):
        raise ModelNotFound(
            f"{path} holds only weights (a state dict: {len(loaded)} entries), not the network "
            "they belong to, so shiwu cannot run it. Pass one of: the whole model saved with "
            "torch.save(model) (then --trust-model-code), a TorchScript file "
            "(torch.jit.trace(model, example).save('model.pt')), or an ONNX file "
            "(torch.onnx.export(model, example, 'model.onnx')).")
    raise ModelNotFound(f"{path}: expected a model, got a {type(loaded).__name__}")


def _classes_in(path: Path) -> str:
    import torch

    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception:  # noqa: BLE001 - only for the message; legacy files cannot be listed
        return ""
    names = [n for n in names if not n.startswith("torch.")] or names
    return f" with the Python classes {', '.join(names[:4])}" if names else ""


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""


@contextmanager
def _importable_from(folder: Path):
    # torch.save(model) stores the class by module and name: a trusted model saved next to the
    # code that defines it (model_def.py beside model.pth) should load as it does for its author.
    sys.path.insert(0, str(folder))
    try:
        yield
    finally:
        try:
            sys.path.remove(str(folder))
        except ValueError:
            pass


def load_module(path: Path, kind: str):
    """The torch module in a pickle (trusted by the caller) or TorchScript file, eval mode, CPU."""
    import torch

    if kind == "torchscript":
        try:
            module = torch.jit.load(str(path), map_location="cpu")
        except (RuntimeError, OSError, ValueError) as exc:
            raise ModelNotFound(f"{path}: cannot load this TorchScript file ({_first_line(exc)})") from None
        return module.eval()
    with _importable_from(path.parent):
        try:
            module = torch.load(path, map_location="cpu", weights_only=False)
        except (AttributeError, ModuleNotFoundError, ImportError) as exc:
            where = (  # a class of the script that saved it is stored as __main__.X: no file next to
                # the model can ever be that module
                "It was defined in the script that saved it (__main__): move the class into a module "
                f"(net.py), import it from there, save again and put net.py next to {path.name}"
                if "__main__" in str(exc) else f"Put the .py file that defines it next to {path.name}")
            raise ModelNotFound(
                f"{path} needs the Python class it was saved from ({_first_line(exc)}): "
                f"torch.save(model) stores the class by name, not its code. {where}, or " + SAVE_INSTEAD) from None
        except Exception as exc:  # noqa: BLE001 - any unpickling failure is this file's problem
            raise ModelNotFound(f"{path}: cannot load this model file: it is truncated, corrupt or not "
                                f"a PyTorch file ({type(exc).__name__}: {_first_line(exc)})") from None
    if isinstance(module, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)):
        module = module.module
    if isinstance(module, dict):
        for key in ("model", "net", "module"):
            if isinstance(module.get(key), torch.nn.Module):
                module = module[key]
                break
    if not isinstance(module, torch.nn.Module):
        raise ModelNotFound(f"{path}: expected a torch.nn.Module, got a {type(module).__name__}")
    module = module.float().eval()
    module.requires_grad_(False)
    return module


def _logits_position(shapes: list[tuple], batch: int | None, path: Path) -> int:
    """The first output of shape (N, C): the logits, as the issue of multi-output models goes."""
    for i, shape in enumerate(shapes):
        if len(shape) == 2 and (batch is None or shape[0] in (batch, None)) and (shape[1] or 0) > 0:
            return i
    raise ModelNotFound(f"{path}: no output of shape (batch, classes) among the model's outputs "
                        f"{shapes}; shiwu needs the logits of a classifier")


def _probe_torch(path: Path, kind: str, size: int) -> ModelFacts:
    import torch

    module = load_module(path, kind)
    # A model traced with one image often has that batch size baked in (len(x) became the
    # constant 1): it still runs, one image at a time.
    for batch in (2, 1):
        try:
            with torch.inference_mode():
                output = module(torch.zeros(batch, 3, size, size))
            break
        except Exception as exc:  # noqa: BLE001 - the user's forward() may raise anything
            failure = exc
    else:
        raise ModelNotFound(f"{path}: the model failed on a (1, 3, {size}, {size}) image batch "
                            f"({type(failure).__name__}: {_first_line(failure)}); shiwu feeds NCHW "
                            "float RGB batches; set its input size in shiwu.json beside it")
    tensors = flat_outputs(output)
    shapes = [tuple(t.shape) if isinstance(t, torch.Tensor) else () for t in tensors]
    index = _logits_position(shapes, batch, path)
    single = isinstance(output, torch.Tensor)
    if batch == 2 and not _trace_keeps_batches(module, size, None if single else index):
        batch = 1
    from .embedding import classifier_layer

    layer = classifier_layer(module, torch.zeros(batch, 3, size, size), None if single else index)
    return ModelFacts(kind, checked_classes(path, shapes[index][1]), None if single else index,
                      fixed_batch=1 if batch == 1 else None, outputs=len(tensors), embedding_layer=layer)


def _trace_keeps_batches(module, size: int, index: int | None) -> bool:
    """Whether the graph shiwu exports (a trace with one example image) still answers for two
    images at once. Tracing turns ``len(x)`` or ``x.view(1, -1)`` into constants: such a graph
    fails, or worse, silently broadcasts one image's answer over the batch (seen in OpenVINO)."""
    import torch

    from .embedding import exportable_attention

    def run(m, x):
        with torch.inference_mode():
            return pick_logits(m(torch.from_numpy(x)), index).float().numpy()

    if not isinstance(module, torch.jit.ScriptModule):
        try:
            with torch.no_grad(), exportable_attention(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # TracerWarnings are what this check is about
                module = torch.jit.trace(module, torch.zeros(1, 3, size, size), check_trace=False, strict=False)
        except Exception:  # noqa: BLE001 - not traceable: the export will say why, later
            return True
    return batches_agree(lambda x: run(module, x), size)


def batches_agree(run, size: int) -> bool:
    """Two images run together give what each gives alone (see _trace_keeps_batches)."""
    import numpy as np

    x = np.random.default_rng(0).standard_normal((2, 3, size, size), dtype=np.float32)
    try:
        together = run(x)
        alone = np.concatenate([run(x[i:i + 1]) for i in range(2)])
    except Exception:  # noqa: BLE001 - any runtime's shape error means: one image at a time
        return False
    return together.shape == alone.shape and bool(np.allclose(together, alone, rtol=1e-3, atol=1e-4))


# ----------------------------------------------------------------------------- graphs

def _graph_facts(kind: str, path: Path, inputs: list[tuple], outputs: list[tuple]) -> ModelFacts:
    if not inputs or len(inputs[0]) != 4:
        raise ModelNotFound(f"{path}: expected one image input of shape (batch, 3, height, width), "
                            f"got {inputs[0] if inputs else 'none'}")
    _, channels, height, width = inputs[0]
    if channels not in (3, None):
        raise ModelNotFound(f"{path}: the input has {channels} channels where shiwu feeds 3 (RGB, "
                            "NCHW); an NHWC model must be exported with NCHW input")
    if (height is None) != (width is None) or (height is not None and height != width):
        raise ModelNotFound(f"{path}: input {height}x{width}: shiwu feeds square images; export "
                            "the model with a square (or dynamic) input size")
    index = _logits_position(outputs, inputs[0][0], path)
    num_classes = checked_classes(path, outputs[index][1])
    return ModelFacts(kind, num_classes, index if len(outputs) > 1 else None, height,
                      inputs[0][0], len(outputs))


def checked_classes(path: Path, count) -> int:
    """The number of classes a model declares, refused beyond MAX_CLASSES."""
    if int(count) > MAX_CLASSES:
        raise ModelNotFound(f"{path}: the model declares {int(count):,} classes; shiwu takes at most "
                            f"{MAX_CLASSES:,} (is the logits output's shape right?)")
    return int(count)


def _probe_onnx(path: Path) -> ModelFacts:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises its own DecodeError and others
        raise ModelNotFound(f"{path} is not an ONNX model (it cannot be parsed: "
                            f"{type(exc).__name__}: {_first_line(exc)})") from None
    graph = model.graph
    initializers = {i.name for i in graph.initializer}

    def dims(value) -> tuple:
        shape = value.type.tensor_type.shape
        return tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                     for d in shape.dim)

    if not graph.output:
        raise ModelNotFound(f"{path} is not an ONNX model with outputs")
    inputs = [dims(v) for v in graph.input if v.name not in initializers]
    facts = _graph_facts("onnx", path, inputs, [dims(v) for v in graph.output])
    external = external_data_files(model)
    if external:
        _check_external_data(path)
        facts = replace(facts, external_data=external)
    if facts.fixed_batch is None:
        import onnxruntime as ort

        try:
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception:  # noqa: BLE001 - the backend says why when it loads the file
            return facts
        name = session.get_inputs()[0].name
        if not batches_agree(lambda x: session.run(None, {name: x})[facts.output_index or 0],
                             facts.fixed_size or PROBE_SIZE):
            facts = replace(facts, fixed_batch=1)
    return facts


def external_data_files(model) -> tuple[str, ...]:
    """The files an ONNX model keeps its weights in (``location`` of external-data tensors)."""
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    def tensors(graph):
        yield from graph.initializer
        for node in graph.node:
            for attribute in node.attribute:
                yield from ([attribute.t] if attribute.HasField("t") else []) + list(attribute.tensors)
                for sub in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                    yield from tensors(sub)

    locations = []
    for tensor in tensors(model.graph):
        if uses_external_data(tensor):
            location = ExternalDataInfo(tensor).location
            if location not in locations:
                locations.append(location)
    return tuple(locations)


def _check_external_data(path: Path) -> None:
    """Let the onnx package load the weights once: it refuses a location outside the model's
    folder, a symbolic link, and a length beyond the file (onnx >= 1.17, pinned)."""
    import onnx

    try:
        onnx.load(str(path), load_external_data=True)
    except Exception as exc:  # noqa: BLE001 - onnx raises ValidationError, ValueError, OSError ...
        raise ModelNotFound(f"{path}: its external weights cannot be used: {_first_line(exc)}") from None


def _probe_openvino(path: Path) -> ModelFacts:
    import openvino as ov

    if not path.with_suffix(".bin").is_file():
        raise ModelNotFound(f"{path}: an OpenVINO IR needs its weights beside it: "
                            f"{path.with_suffix('.bin').name} is missing")
    try:
        model = ov.Core().read_model(str(path))
    except RuntimeError as exc:
        raise ModelNotFound(f"{path} is not a readable OpenVINO IR ({_first_line(exc)})") from None

    def dims(port) -> tuple:
        shape = port.get_partial_shape()
        return tuple(d.get_length() if d.is_static else None for d in shape) if shape.rank.is_static else ()

    facts = _graph_facts("openvino", path, [dims(p) for p in model.inputs], [dims(p) for p in model.outputs])
    if facts.fixed_batch is None:
        try:
            compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        except RuntimeError:
            return facts
        if not batches_agree(lambda x: compiled(x)[facts.output_index or 0], facts.fixed_size or PROBE_SIZE):
            facts = replace(facts, fixed_batch=1)
    return facts


# ----------------------------------------------------------------------------- facts, cached

def facts_for(path: Path, fingerprint: str, *, trust_model_code: bool, probe_size: int = PROBE_SIZE) -> ModelFacts:
    """The facts about ``path`` (remembered by content), refusing untrusted pickles first."""
    from ..cache import atomic_write_text, find, read_json

    memo = find("model-facts", f"{fingerprint[:40]}.json")
    remembered = read_json(memo)
    facts = None
    if remembered.get("version") == FACTS_VERSION:
        remembered.pop("version")
        try:
            facts = ModelFacts(**{**remembered, "external_data": tuple(remembered.get("external_data", ()))})
        except TypeError:
            facts = None
    kind = facts.kind if facts else kind_of(path)
    if kind == "pickle":
        if facts is None or not trust_model_code:
            check_pickle(path, trust_model_code)  # refuses, whatever was remembered
    if facts is not None:
        return facts
    if kind == "onnx":
        facts = _probe_onnx(path)
    elif kind == "openvino":
        facts = _probe_openvino(path)
    else:
        facts = _probe_torch(path, kind, probe_size)
    atomic_write_text(memo, json.dumps({"version": FACTS_VERSION, **asdict(facts)}))
    return facts
