"""shiwu (识物): recognise what is in a photo and name it in Chinese, fast, on a plain CPU."""

from .images import ImageError, load_image
from .postprocess import Prediction
from .recognizer import Recognizer, Result
from .version import __version__

__all__ = ["Recognizer", "Prediction", "Result", "ImageError", "load_image", "__version__"]
