"""The 万物识别 model: ModelScope's ``damo/cv_resnest101_general_recognition`` (also ``iic/…``).

ResNeSt-101 with 54,092 Chinese classes, from the user's own ModelScope download; nothing is
fetched at run time. Accepted ``--model`` values:

- ``modelscope:damo/cv_resnest101_general_recognition`` or ``modelscope:iic/…`` (the bare ids
  work too): looked up in the ModelScope cache, every layout its SDK versions have used;
- a directory holding ``pytorch_model.pt`` and ``meta_info.txt`` (e.g. from
  ``modelscope download --model … --local_dir DIR``).

Loading: ``torch.load(map_location="cpu", weights_only=True)`` always (a checkpoint is data,
and tensors saved from CUDA land on the CPU), memory-mapped when the file is in torch's zip
format, into a network built on the meta device with ``load_state_dict(assign=True)``: the
630 MB of weights exist once, in the page cache, instead of once random-initialised and once
loaded (what the official pipeline does).

Preprocessing is the official ``GeneralRecognitionPipeline``'s, to the pixel: full-size
decode (no JPEG draft scaling), torchvision ``Resize(256)`` (bilinear, long side truncated),
``CenterCrop(224)`` (offsets rounded half-to-even), ImageNet mean/std. So the top-1 is the
official pipeline's top-1, and shiwu adds top-k softmax probabilities and clean labels.

No torch at import time: ``shiwu models`` and the cached ONNX / OpenVINO paths stay light.
"""

from __future__ import annotations

import functools
import json
import os
import zipfile
from pathlib import Path

from PIL import Image

from ..labels import LabelSet
from ..preprocess import IMAGENET_MEAN, IMAGENET_STD, TorchvisionPreprocessing
from .spec import ModelNotFound, ModelRef, ModelSpec

PREFIX = "modelscope:"
MODEL_NAME = "cv_resnest101_general_recognition"
MODEL_ID = f"damo/{MODEL_NAME}"
MODEL_IDS = (MODEL_ID, f"iic/{MODEL_NAME}")  # the same model; ModelScope moved damo/ to iic/
CATALOG_NAME = PREFIX + MODEL_ID
NUM_CLASSES = 54092

WEIGHTS_FILE = "pytorch_model.pt"
LABELS_FILE = "meta_info.txt"
CONFIG_FILE = "configuration.json"



# Exactly the official GeneralRecognitionPipeline's: full decode, torchvision Resize(256) +
# CenterCrop(224), ImageNet mean/std (see TorchvisionPreprocessing for why each detail matters).
PREPROCESSING = TorchvisionPreprocessing(
    size=224, crop_ratio=224 / 256, mean=IMAGENET_MEAN, std=IMAGENET_STD,
    resample=Image.Resampling.BILINEAR, full_decode=True)


# ----------------------------------------------------------------------------- finding it

def handles(name: str) -> bool:
    """Whether ``--model name`` is ours: a ``modelscope:`` id, a known bare id, or a directory
    that looks like a ModelScope download of it (its weights or its labels are there)."""
    if name.startswith(PREFIX) or name in MODEL_IDS:
        return True
    path = Path(name).expanduser()
    return path.is_dir() and ((path / WEIGHTS_FILE).exists() or (path / LABELS_FILE).exists())


def cache_roots() -> list[Path]:
    """ModelScope cache roots: ``$MODELSCOPE_CACHE`` if set, then ``~/.cache/modelscope``."""
    roots = []
    env = os.environ.get("MODELSCOPE_CACHE")
    if env:
        roots.append(Path(env).expanduser())
    roots.append(Path.home() / ".cache" / "modelscope")
    return list(dict.fromkeys(roots))


def _aliases(model_id: str) -> list[str]:
    return [model_id] + [i for i in MODEL_IDS if i != model_id] if model_id in MODEL_IDS else [model_id]


def candidate_dirs(model_id: str = MODEL_ID) -> list[Path]:
    """Every directory a ModelScope download of ``model_id`` may be in, in search order.

    Under each root, with or without ``hub/``: ``<org>/<name>`` (old SDKs) and
    ``models/<org>/<name>`` (1.x; dots in the name stored as ``___``); and the modelscope-hub
    layout ``models/<org>--<name>/snapshots/<revision>``.
    """
    dirs = []
    for ident in _aliases(model_id):
        org, _, name = ident.partition("/")
        names = list(dict.fromkeys([name, name.replace(".", "___")]))
        for root in cache_roots():
            for base in (root / "hub", root):
                for n in names:
                    dirs += [base / org / n, base / "models" / org / n]
            dirs.append(root / "models" / f"{org}--{name}" / "snapshots")
    return list(dict.fromkeys(dirs))


def _is_model_dir(path: Path) -> bool:
    return (path / WEIGHTS_FILE).is_file() and (path / LABELS_FILE).is_file()


def find_model_dir(model_id: str = MODEL_ID) -> Path | None:
    return first_model_dir(candidate_dirs(model_id), _is_model_dir)


def first_model_dir(dirs: list[Path], is_model_dir) -> Path | None:
    """The first of ``dirs`` (as ``candidate_dirs`` lists them) that ``is_model_dir`` accepts;
    of a ``snapshots`` folder, its newest accepted snapshot."""
    for path in dirs:
        if path.name == "snapshots":
            try:
                snapshots = [p for p in path.iterdir() if is_model_dir(p)]
            except OSError:
                continue
            if snapshots:
                return max(snapshots, key=lambda p: p.stat().st_mtime)
        elif is_model_dir(path):
            return path
    return None


def download_command(model_id: str = MODEL_ID, local_dir: str | Path = "./cv_resnest101_general_recognition") -> str:
    return f"modelscope download --model {model_id} --local_dir {local_dir}"


def download_hint(model_id: str = MODEL_ID, searched: list[Path] | None = None) -> str:
    searched = candidate_dirs(model_id) if searched is None else searched
    local = "./cv_resnest101_general_recognition"
    lines = [
        "Download it once (about 630 MB; needs `pip install modelscope`), then point shiwu at it:",
        f"    {download_command(model_id, local)}",
        f"    shiwu predict --model {local} photo.jpg",
        "shiwu never downloads at run time. Looked in:",
    ]
    lines += [f"    {p}" for p in searched]
    return "\n".join(lines)


def resolve(ref: ModelRef) -> ModelSpec:
    """The ModelSpec for ``--model name`` (see ``handles``), or ModelNotFound saying what to do."""
    from .packaged import refuse_options

    name = ref.name
    refuse_options(ref, "the 万物识别 model")
    ident = name[len(PREFIX):] if name.startswith(PREFIX) else name
    if ident in MODEL_IDS or name.startswith(PREFIX):
        if ident.count("/") != 1 or ident.startswith("/"):
            raise ModelNotFound(f"{name!r}: expected modelscope:<org>/<name>, "
                                f"e.g. {PREFIX}{MODEL_ID}")
        if ident.split("/")[1] != MODEL_NAME:
            raise ModelNotFound(f"{name!r}: shiwu runs ModelScope's {MODEL_NAME} "
                                f"(damo/ or iic/), not {ident}")
        directory = find_model_dir(ident)
        if directory is None:
            raise ModelNotFound(f"ModelScope model {ident} is not on this machine.\n"
                                + download_hint(ident))
        return spec_for_directory(directory, name=PREFIX + ident)
    # Absolute, so that the name (in results, and as the key of tuned settings and cached
    # exports) is the same whichever directory shiwu was started from.
    return spec_for_directory(Path(name).expanduser().resolve())


# ----------------------------------------------------------------------------- the spec

def _read_config(directory: Path) -> dict:
    try:
        config = json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


# resnest.py's split-attention sums as Slice + Add (not torch: this module is read without it):
# graphs exported before are exported again.
GRAPH_REVISION = "split-sums"


def spec_for_directory(directory: str | Path, name: str | None = None):
    """A ModelSpec for a ModelScope model directory (weights + ``meta_info.txt``)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ModelNotFound(f"model directory {directory} does not exist (or is not a directory). "
                            f"Get the 万物识别 model with:\n    {download_command(MODEL_ID, directory)}")
    missing = [f for f in (WEIGHTS_FILE, LABELS_FILE) if not (directory / f).is_file()]
    if missing:
        raise ModelNotFound(f"{directory} is not a ModelScope model directory: no {' or '.join(missing)}. "
                            f"Download the model there with:\n    {download_command(MODEL_ID, directory)}")
    labels_path = directory / LABELS_FILE
    try:
        labels = LabelSet.from_meta_info(labels_path)
    except (OSError, ValueError) as exc:
        raise ModelNotFound(f"cannot read the labels: {exc}") from None

    synthetic = bool(_read_config(directory).get("synthetic"))
    kind = "SYNTHETIC (random weights) " if synthetic else ""
    weights = directory / WEIGHTS_FILE
    return ModelSpec(
        name=name or str(directory),
        description=f"{kind}万物识别 ResNeSt-101, {len(labels):,} Chinese classes, from {directory}",
        num_classes=len(labels),
        preprocessing=PREPROCESSING,
        locate_weights=lambda: weights,
        install_hint=f"Download it with:\n    {download_command(MODEL_ID, directory)}",
        load_labels=lambda: labels,
        build_network=lambda spec, size: load_network(weights, num_classes=spec.num_classes),
        embedding_layer="fc",  # 2048-d pooled features
        graph_revision=GRAPH_REVISION,
    )


def catalog() -> list[ModelSpec]:
    return [catalog_spec()]


def catalog_spec() -> ModelSpec:
    """The entry in ``shiwu models``: the 54,092-class model, wherever the ModelScope cache has it."""
    def located() -> Path:
        directory = find_model_dir(MODEL_ID)
        if directory is None:
            raise ModelNotFound(f"ModelScope model {MODEL_ID} is not on this machine.\n"
                                + download_hint(MODEL_ID))
        return directory

    def locate_weights() -> Path | None:
        directory = find_model_dir(MODEL_ID)
        return None if directory is None else directory / WEIGHTS_FILE

    return ModelSpec(
        name=CATALOG_NAME,
        description="万物识别 ResNeSt-101, 54,092 Chinese classes (ModelScope; your local download)",
        num_classes=NUM_CLASSES,
        preprocessing=PREPROCESSING,
        locate_weights=locate_weights,
        install_hint=f"Download it with: {download_command()} (then --model that directory)",
        load_labels=lambda: _cached_labels(located() / LABELS_FILE),
        build_network=lambda spec, size: load_network(located() / WEIGHTS_FILE,
                                                      num_classes=spec.num_classes),
        embedding_layer="fc",
        graph_revision=GRAPH_REVISION,
    )


@functools.lru_cache(maxsize=4)
def _cached_labels(path: Path) -> LabelSet:
    return LabelSet.from_meta_info(path)


# ----------------------------------------------------------------------------- loading it

def load_state_dict(path: str | Path) -> dict:
    """The checkpoint's tensors under the network's own names, on the CPU, memory-mapped.

    Accepts ``{'state_dict': sd}`` or a bare ``sd``, and ``module.`` (DataParallel) prefixes.
    """
    import pickle

    import torch

    path = Path(path)
    # Only torch's zip format (torch >= 1.6) can be memory-mapped; the legacy format is read
    # into memory once, and ``assign=True`` below still avoids a second copy.
    mmap = zipfile.is_zipfile(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        raise ModelNotFound(f"{path}: refused to load: it is not a plain tensor checkpoint "
                            f"(weights_only=True). {exc}") from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise ModelNotFound(f"{path}: cannot read this checkpoint ({exc})") from None

    if isinstance(checkpoint, dict):
        for key in ("state_dict", "model"):
            if isinstance(checkpoint.get(key), dict):
                checkpoint = checkpoint[key]
                break
    if not isinstance(checkpoint, dict) or not checkpoint:
        raise ModelNotFound(f"{path}: expected a state dict, got {type(checkpoint).__name__}")

    state = {}
    for key, value in checkpoint.items():
        if not isinstance(value, torch.Tensor):
            continue
        while key.startswith("module."):
            key = key[len("module."):]
        state[key.replace(".module.", ".")] = value
    return state


def load_network(path: str | Path, num_classes: int | None = None):
    """ResNeSt-101 with the checkpoint's weights, eval mode, no autograd.

    ``num_classes``: how many labels there are; a classifier of another size is an error that
    says so, rather than labels silently pointing at the wrong classes.
    """
    import torch

    from .resnest import ResNeSt, ResNeStConfig

    path = Path(path)
    state = load_state_dict(path)
    fc = state.get("fc.weight")
    if fc is None or fc.ndim != 2:
        raise ModelNotFound(f"{path}: no classifier (fc.weight) in this checkpoint; is it the "
                            f"ResNeSt-101 {MODEL_NAME} model? Keys start with: {_first_keys(state)}")
    if num_classes is not None and fc.shape[0] != num_classes:
        raise ModelNotFound(
            f"{path.parent}: {LABELS_FILE} has {num_classes:,} labels but {WEIGHTS_FILE}'s "
            f"classifier has {fc.shape[0]:,} classes; the two files must come from the same model")

    with torch.device("meta"):
        network = ResNeSt(ResNeStConfig(num_classes=fc.shape[0]))
    expected = network.state_dict()
    for key in expected:
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros((), dtype=torch.long)  # pre-0.4.1 checkpoints lack it
    missing = [k for k in expected if k not in state]
    if missing:
        raise ModelNotFound(
            f"{path}: {len(missing)} of the network's {len(expected)} tensors are missing from the "
            f"checkpoint, e.g. {', '.join(missing[:3])}; checkpoint keys start with: {_first_keys(state)}")
    state = {k: (v.float() if v.is_floating_point() and v.dtype != torch.float32 else v)
             for k, v in state.items() if k in expected}
    try:
        network.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise ModelNotFound(f"{path}: weights do not fit ResNeSt-101: {exc}") from None
    network.requires_grad_(False)
    return network.eval()


def _first_keys(state: dict, n: int = 3) -> str:
    return ", ".join(list(state)[:n]) or "(none)"
