"""shiwu (识物): recognise what is in a photo and name it in Chinese, fast, on a plain CPU."""

from __future__ import annotations

from .version import __version__

# What a caller may catch, all ShiwuError: a bad image (ImageError), an unknown or unreadable
# model (ModelNotFound; UntrustedModel when only trust_model_code=True loads it), a runtime or
# precision this machine cannot run (BackendUnavailable), a bad gallery folder (GalleryError).
__all__ = ["Recognizer", "Prediction", "Result", "ImageError", "load_image", "BackendUnavailable",
           "ModelNotFound", "UntrustedModel", "GalleryError", "ShiwuError", "__version__"]

# Loaded on first use (PEP 562): `import shiwu.cli` (the `shiwu` command) then starts without
# numpy, so a Ctrl-C in its first moments reaches the command's handler, not an import.
_WHERE = {"Recognizer": "recognizer", "Result": "recognizer", "Prediction": "postprocess",
          "ImageError": "images", "load_image": "images", "BackendUnavailable": "backends",
          "ModelNotFound": "models.spec", "UntrustedModel": "models.spec", "GalleryError": "gallery",
          "ShiwuError": "errors"}

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (type checkers read it so)
if TYPE_CHECKING:
    from .backends import BackendUnavailable
    from .errors import ShiwuError
    from .gallery import GalleryError
    from .images import ImageError, load_image
    from .models.spec import ModelNotFound, UntrustedModel
    from .postprocess import Prediction
    from .recognizer import Recognizer, Result


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'shiwu' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
