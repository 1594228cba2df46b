"""Static graphs from the torch network: ONNX (for onnxruntime and OpenVINO) and TorchScript.

``cached_onnx`` is the one entry point runtimes use: it returns the path of a complete ONNX
file for (model, weights, size), exporting it only when the cache has none. torch is imported
only on that miss, so a warm start of the ONNX Runtime / OpenVINO backends never loads it.

Every graph shiwu writes has the outputs ``logits`` then, where the model has a classifier
layer, ``embedding`` (its input): predicting and embedding are one inference. A user's own ONNX
file is copied once into that shape (see graph_outputs).
"""

from __future__ import annotations

import importlib.metadata
import io
import logging
import warnings
from pathlib import Path

from .. import cache

log = logging.getLogger(__name__)

ONNX_OPSET = 17
INPUT_NAME, OUTPUT_NAME, EMBEDDING_NAME = "input", "logits", "embedding"
GRAPH_OUTPUTS = "logits+embedding"  # in the cache keys: graphs cached with other outputs are not reused


def graph_key(spec) -> str:
    """What an exported graph's cache key says about how it was written."""
    return f"{GRAPH_OUTPUTS}-{spec.graph_revision}" if spec.graph_revision else GRAPH_OUTPUTS


def torch_version() -> str:
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return "none"


def onnx_entry(spec, size: int) -> Path:
    made_by = "copy" if spec.onnx_file is not None else f"torch-{torch_version()}-opset{ONNX_OPSET}"
    return cache.entry_path(model=spec.name, fingerprint=spec.fingerprint(),
                            size=size, precision="fp32", kind="onnx",
                            runtime_version=f"{made_by}-{graph_key(spec)}", suffix=".onnx")


def cached_onnx(spec, size: int, *, rebuild: bool = False) -> Path:
    """The ONNX graph for (model, size), outputs (logits[, embedding]): exported once, or the
    user's own file copied once with those outputs."""
    if spec.openvino_file is not None:
        from . import BackendUnavailable, unsupported
        raise BackendUnavailable(unsupported(spec, "onnxruntime"))
    path = onnx_entry(spec, size)
    if rebuild:
        cache.discard(path)
    if not path.exists():
        if spec.onnx_file is not None:
            from .graph_outputs import onnx_with_outputs

            with cache.atomic_output(path) as tmp:
                onnx_with_outputs(spec.onnx_file, tmp, spec.output_index)
        else:
            export_onnx(spec, size, path)
    return path


def export_onnx(spec, size: int, target: Path) -> Path:
    """Write an fp32 ONNX model with a dynamic batch axis to ``target`` (atomically)."""
    import torch

    log.info("exporting %s (%dpx) to ONNX once; later runs reuse %s", spec.name, size, target)
    from ..models.embedding import LogitsAndEmbedding, exportable_attention, with_outputs

    network = spec.build(size)
    wrapped = with_outputs(network, spec)
    tapped = isinstance(wrapped, LogitsAndEmbedding)
    example = torch.zeros(1, 3, size, size)
    with cache.atomic_output(target) as tmp, torch.inference_mode(), warnings.catch_warnings(), \
            exportable_attention():
        warnings.simplefilter("ignore")  # the exporter's internal deprecation chatter
        # The TorchScript-based exporter: about 7x faster than the dynamo one here and it
        # writes one self-contained file, which keeps the atomic rename simple. A ScriptModule
        # (the user's TorchScript file) cannot be wrapped: it is exported with all its outputs,
        # and the logits and embedding are then found in the graph.
        names = [OUTPUT_NAME, EMBEDDING_NAME] if tapped else None
        try:
            torch.onnx.export(
                wrapped, (example,), str(tmp), dynamo=False, opset_version=ONNX_OPSET,
                input_names=[INPUT_NAME], output_names=names,
                # a model whose trace bakes in its batch size is exported for one image at a time
                dynamic_axes=({} if spec.fixed_batch else
                              {INPUT_NAME: {0: "batch"}, **{n: {0: "batch"} for n in names or ()}}),
                do_constant_folding=True,
            )
            if not tapped:
                from .graph_outputs import onnx_with_outputs

                onnx_with_outputs(tmp, tmp, spec.output_index if wrapped is network else None)
        except OSError:
            raise  # the file could not be written (a full cache: cache.CacheFull), not the model
        except Exception as exc:  # noqa: BLE001 - a user's model may use anything ONNX lacks
            from . import BackendUnavailable

            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            hint = (" (it was traced with PyTorch's fused attention: trace it again after "
                    "torch.backends.mha.set_fastpath_enabled(False), or pass the whole model)"
                    if "_transformer_encoder_layer_fwd" in str(exc) or "_native_multi_head" in str(exc) else "")
            raise BackendUnavailable(
                f"{spec.name} cannot be exported to ONNX ({type(exc).__name__}: {first}){hint}, so "
                "onnxruntime and openvino cannot run it; --backend torch or torchscript can") from None
    return target


def export_torchscript(spec, size: int, target: Path, *, embedding: bool = True) -> Path:
    """Trace, freeze (folds batch norm into convolutions) and save a TorchScript module that
    returns (logits, embedding) — or, with ``embedding=False`` (for deployment), the logits."""
    import torch

    from ..models.embedding import exportable_attention, with_outputs

    network = with_outputs(spec.build(size), spec, embedding=embedding)
    example = torch.zeros(1, 3, size, size)
    with torch.inference_mode(False), torch.no_grad(), exportable_attention():
        # A user's TorchScript file needs no tracing; strict=False: a user's model may return a
        # dict or list (the backend picks the logits).
        traced = network if isinstance(network, torch.jit.ScriptModule) else torch.jit.trace(
            network, example, check_trace=False, strict=False)
        frozen = torch.jit.freeze(traced.eval())
    # saved in memory, then written by Python: torch's own file writer, on a full disk, throws a
    # C++ error nothing catches (the process aborted, exit 134, its temporary file left behind);
    # here a full disk is an OSError and the temporary file is removed
    buffer = io.BytesIO()
    torch.jit.save(frozen, buffer)
    with cache.atomic_output(target) as tmp:
        tmp.write_bytes(buffer.getbuffer())
    return target


def openvino_source(spec, size: int, *, rebuild: bool = False) -> Path:
    """What OpenVINO reads for (model, size): the user's own IR, else the ONNX graph."""
    if spec.openvino_file is not None:
        return spec.openvino_file
    return cached_onnx(spec, size, rebuild=rebuild)
