"""shiwu (识物): recognise what is in a photo and name it in Chinese, fast, on a plain CPU."""

from .backends import BackendUnavailable
from .errors import ShiwuError
from .gallery import GalleryError
from .images import ImageError, load_image
from .models.spec import ModelNotFound, UntrustedModel
from .postprocess import Prediction
from .recognizer import Recognizer, Result
from .version import __version__

# What a caller may catch, all ShiwuError: a bad image (ImageError), an unknown or unreadable
# model (ModelNotFound; UntrustedModel when only trust_model_code=True loads it), a runtime or
# precision this machine cannot run (BackendUnavailable), a bad gallery folder (GalleryError).
__all__ = ["Recognizer", "Prediction", "Result", "ImageError", "load_image", "BackendUnavailable",
           "ModelNotFound", "UntrustedModel", "GalleryError", "ShiwuError", "__version__"]
