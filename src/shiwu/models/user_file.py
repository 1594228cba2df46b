"""The user's own model: ``model.pth`` / TorchScript / ONNX / OpenVINO IR, or a folder of one.

``--model PATH`` where PATH is

- a model file: a whole pickled ``nn.Module`` (``.pth``, ``.pt``, ``.bin``; loading it runs
  code, so only with ``--trust-model-code``), a TorchScript file (``torch.jit.save``), an ONNX
  file or an OpenVINO IR ``.xml`` (with its ``.bin``) — the graph files run directly in ONNX
  Runtime / OpenVINO, without torch;
- a folder holding one of these, its labels (``label_map.json``, ``labels.txt``, ...) and
  optionally ``shiwu.json`` (below).

``shiwu.json`` (written by ``shiwu export``; every field optional)::

    {"model": "model.onnx", "labels": "model.onnx.labels.tsv", "resize": "squash",
     "size": 224, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
     "interpolation": "bilinear"}

Command-line options win over ``shiwu.json``, which wins over the defaults (crop, 224, ImageNet
mean/std, bilinear); a fixed input size in an ONNX / IR file wins over all of them.
"""

from __future__ import annotations

import logging
import json
import os
from pathlib import Path

from PIL import Image

from ..labels import LABEL_FILE_KINDS, LabelSet
from ..preprocess import CROP_RATIO, IMAGENET_MEAN, IMAGENET_STD, Preprocessing, TorchvisionPreprocessing
from .spec import ModelNotFound, ModelRef, ModelSpec

log = logging.getLogger(__name__)

MODEL_SUFFIXES = (".pth", ".pt", ".pth.tar", ".bin", ".ckpt", ".pkl", ".jit", ".onnx", ".xml")
LABEL_FILES = ("label_map.json", "labels.json", "labels.txt", "labels.tsv", "labels.csv",
               "classes.txt", "class_names.txt", "meta_info.txt")
SETTINGS_FILE = "shiwu.json"
SETTINGS_FIELDS = ("model", "labels", "resize", "size", "mean", "std", "interpolation")
RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}
RUNTIMES = {"onnx": ("onnxruntime", "openvino"), "openvino": ("openvino",)}

_warned: set[str] = set()


def handles(name: str) -> bool:
    """Paths: anything with a separator, a leading . or ~, or a name that exists here."""
    return os.sep in name or "/" in name or name.startswith((".", "~")) or Path(name).expanduser().exists()


def catalog() -> list[ModelSpec]:
    return []  # the user's files are named on the command line, not listed


def resolve(ref: ModelRef) -> ModelSpec:
    from ..cache import weights_fingerprint
    from .model_files import facts_for

    given = Path(ref.name).expanduser()
    if not given.exists():
        raise ModelNotFound(f"{ref.name} does not exist: give a model name (see `shiwu models`), a "
                            "ModelScope folder, or your own model file (.pth, .pt, .onnx, .xml) or folder")
    given = given.resolve()
    model_file = find_model_file(given) if given.is_dir() else given
    if not model_file.is_file():
        raise ModelNotFound(f"{model_file} is not a file")
    if model_file.stat().st_size == 0:
        raise ModelNotFound(f"{model_file} is empty")
    if model_file.suffix.lower() == ".xml" and os.path.lexists(model_file.with_suffix(".bin")):
        own_file(model_file, model_file.with_suffix(".bin").name, "weights file")
    settings = read_settings(model_file)
    size = settings.get("size", 224)
    facts = facts_for(model_file, weights_fingerprint(model_file), trust_model_code=ref.trust_model_code,
                      probe_size=size if isinstance(size, int) and 32 <= size <= 1024 else 224)
    # an ONNX file's external weights are checked at every start (the facts are remembered by
    # the .onnx file's content only) and are part of the model's identity: other weights,
    # another export
    weight_files = [own_file(model_file, name, "external weights file") for name in facts.external_data]
    identity = "|".join(weights_fingerprint(f) for f in weight_files)
    preprocessing = _preprocessing(ref, settings, facts.fixed_size, model_file)
    labels, labels_from = _labels(ref, settings, model_file, facts.num_classes)

    runtimes = RUNTIMES.get(facts.kind)
    build = None
    if facts.kind in ("pickle", "torchscript"):
        from .model_files import load_module

        def build(spec, size, _path=model_file, _kind=facts.kind):
            return load_module(_path, _kind)
    kind_text = {"pickle": "pickled PyTorch model", "torchscript": "TorchScript model",
                 "onnx": "ONNX model", "openvino": "OpenVINO IR"}[facts.kind]
    return ModelSpec(
        name=model_file.name,
        key=str(model_file),
        description=f"your {kind_text}, {facts.num_classes:,} classes, labels {labels_from}, "
                    f"{preprocessing.resize} {preprocessing.size}px, from {model_file}",
        num_classes=facts.num_classes,
        preprocessing=preprocessing,
        locate_weights=lambda: model_file if facts.kind != "openvino" else model_file.with_suffix(".bin"),
        install_hint=f"{model_file} is missing",
        load_labels=lambda: labels,
        build_network=build,
        onnx_file=model_file if facts.kind == "onnx" else None,
        openvino_file=model_file if facts.kind == "openvino" else None,
        runtimes=runtimes,
        fixed_size=facts.fixed_size,
        fixed_batch=facts.fixed_batch,
        output_index=facts.output_index,
        embedding_layer=facts.embedding_layer,
        file_kind=facts.kind,
        identity=identity,
    )


def own_file(model_file: Path, name: str, what: str) -> Path:
    """``name`` beside ``model_file``, refused unless it is a regular file inside the model's
    folder reached without a symbolic link: a model's files are read from its folder only
    (an IR's .bin linked to /etc/passwd must not be read, let alone quoted in an error)."""
    folder = model_file.parent
    candidate = Path(os.path.normpath(folder / name))
    if not name or Path(name).is_absolute() or not candidate.is_relative_to(folder):
        raise ModelNotFound(f"{model_file}: its {what} {name!r} is outside the model's folder; "
                            "shiwu reads a model's files from its own folder only")
    if candidate.resolve() != candidate:
        raise ModelNotFound(f"{model_file}: its {what} {candidate.name} is a symbolic link (or reached "
                            "through one); copy the file itself into the model's folder")
    if not candidate.is_file():
        raise ModelNotFound(f"{model_file}: its {what} {candidate.name} is missing or not a regular file")
    return candidate


# ----------------------------------------------------------------------------- files

def find_model_file(folder: Path) -> Path:
    """The one model file in a folder (``shiwu.json``'s ``model`` names it when there are several)."""
    named = _settings_file(folder).get("model")
    if isinstance(named, str) and named:
        path = (folder / named).resolve()
        if not path.is_file():
            raise ModelNotFound(f"{folder / SETTINGS_FILE} names the model {named!r}, which is not there")
        return path
    try:
        files = sorted(p for p in folder.iterdir() if p.is_file() and _is_model_name(p.name))
    except OSError as exc:
        raise ModelNotFound(f"cannot list {folder}: {exc}") from None
    # an IR's weights file (model.xml + model.bin) is not a model of its own
    stems = {p.stem for p in files if p.suffix.lower() == ".xml"}
    files = [p for p in files if not (p.suffix.lower() == ".bin" and p.stem in stems)]
    if not files:
        raise ModelNotFound(f"no model file in {folder}: expected one of "
                            f"{', '.join('*' + s for s in MODEL_SUFFIXES)}")
    if len(files) > 1:
        raise ModelNotFound(f"{folder} holds several model files ({', '.join(p.name for p in files)}): "
                            f"name one, e.g. --model {files[0]}, or write {SETTINGS_FILE} with "
                            f'{{"model": "{files[0].name}"}}')
    return files[0]


def _is_model_name(name: str) -> bool:
    lower = name.lower()
    return lower.endswith(MODEL_SUFFIXES) and not lower.startswith(".")


def _settings_file(folder: Path) -> dict:
    path = folder / SETTINGS_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError) as exc:
        raise ModelNotFound(f"{path}: cannot read it as JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ModelNotFound(f"{path}: expected a JSON object with some of {', '.join(SETTINGS_FIELDS)}")
    unknown = sorted(set(data) - set(SETTINGS_FIELDS))
    if unknown:
        raise ModelNotFound(f"{path}: unknown field(s) {', '.join(unknown)}; known: {', '.join(SETTINGS_FIELDS)}")
    return data


def read_settings(model_file: Path) -> dict:
    """``shiwu.json`` beside the model, when it is about this model (its ``model`` field names
    this file, or it names none)."""
    settings = _settings_file(model_file.parent)
    named = settings.get("model")
    if named and (model_file.parent / named).resolve() != model_file:
        return {}
    return settings


def _labels(ref: ModelRef, settings: dict, model_file: Path, num_classes: int) -> tuple[LabelSet, str]:
    if isinstance(ref.labels, tuple):
        raise ModelNotFound(f"{model_file.name} is a closed-set classifier: --labels takes a labels "
                            f"file for it ({LABEL_FILE_KINDS}), not a list of label texts")
    candidate = None
    if ref.labels:
        candidate = Path(ref.labels).expanduser()
        if not candidate.is_file():
            raise ModelNotFound(f"labels file {ref.labels} does not exist")
    elif settings.get("labels"):
        candidate = model_file.parent / str(settings["labels"])
        if not candidate.is_file():
            raise ModelNotFound(f"{model_file.parent / SETTINGS_FILE} names the labels file "
                                f"{settings['labels']!r}, which is not there")
    else:
        found = [model_file.parent / n for n in (f"{model_file.name}.labels.tsv", *LABEL_FILES)
                 if (model_file.parent / n).is_file()]
        candidate = found[0] if found else None
        if candidate is not None and str(candidate) not in _warned:  # said once: a file nobody named
            _warned.add(str(candidate))
            log.info("labels of %s: %s, found beside it (--labels FILE to choose another)", model_file.name,
                     candidate.name)
    if candidate is None:
        key = str(model_file)
        if key not in _warned:
            _warned.add(key)
            log.warning(f"no labels for {model_file.name}: showing 类别0..类别{num_classes - 1}; "
                        f"give them with --labels FILE ({LABEL_FILE_KINDS})")
        return LabelSet.placeholders(num_classes), "类别N placeholders"
    try:
        labels = LabelSet.from_user_file(candidate)
    except (OSError, ValueError) as exc:
        raise ModelNotFound(f"cannot read the labels: {exc}") from None
    if len(labels) != num_classes:
        raise ModelNotFound(f"{candidate} has {len(labels):,} labels but {model_file.name} outputs "
                            f"{num_classes:,} classes: the two must match")
    return labels, candidate.name


def _triple(value, what: str, source: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        values = ()
    if len(values) != 3:
        raise ModelNotFound(f"{source}: {what} must be three numbers (R, G, B on the 0-1 scale), got {value!r}")
    return values  # type: ignore[return-value]


def _preprocessing(ref: ModelRef, settings: dict, fixed_size: int | None, model_file: Path) -> Preprocessing:
    source = str(model_file.parent / SETTINGS_FILE)
    chosen = {**{k: settings[k] for k in ("resize", "mean", "std", "interpolation") if k in settings},
              **ref.preprocessing_options}
    resize = chosen.get("resize", "crop")
    interpolation = chosen.get("interpolation", "bilinear")
    if resize not in ("crop", "squash"):
        raise ModelNotFound(f"{source}: resize must be crop or squash, got {resize!r}")
    if interpolation not in RESAMPLE:
        raise ModelNotFound(f"{source}: interpolation must be bilinear or bicubic, got {interpolation!r}")
    mean = _triple(chosen["mean"], "mean", source) if "mean" in chosen else None
    std = _triple(chosen["std"], "std", source) if "std" in chosen else None
    if std is not None and min(std) <= 0:
        raise ModelNotFound(f"std must be positive, got {std}")
    size = settings.get("size", 224)
    if not isinstance(size, int) or not 32 <= size <= 1024:
        raise ModelNotFound(f"{source}: size must be a whole number of pixels from 32 to 1024, got {size!r}")
    if fixed_size is not None:
        size = fixed_size  # the graph takes nothing else
    values = dict(
        size=size, crop_ratio=CROP_RATIO,
        mean=tuple(v * 255 for v in mean) if mean else IMAGENET_MEAN,
        std=tuple(v * 255 for v in std) if std else IMAGENET_STD,
        resample=RESAMPLE[interpolation], resize=resize,
        # Full decode, as the article's recipe and torchvision do: a JPEG decoded at reduced scale
        # gives other pixels, and the user's top-1 must be the one their own script gives.
        full_decode=True)
    # crop = torchvision's Resize(s / 0.875) + CenterCrop(s), to the pixel
    return TorchvisionPreprocessing(**values) if resize == "crop" else Preprocessing(**values)
