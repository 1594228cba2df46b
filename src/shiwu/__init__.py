"""shiwu (识物): recognise what is in a photo and name it in Chinese, fast, on a plain CPU."""

from .images import ImageError, load_image
from .postprocess import Prediction
from .recognizer import Recognizer, Result

__version__ = "0.1.0"

__all__ = ["Recognizer", "Prediction", "Result", "ImageError", "load_image", "__version__"]
