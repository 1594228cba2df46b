"""The article's recipe (推理.py) written out with Pillow + numpy: the reference every shiwu path
must agree with when it reads the article reader's own model files."""

import numpy as np
from PIL import Image

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def article_tensor(path) -> np.ndarray:
    """推理.py's preprocessing: Resize((224, 224)), ToTensor, Normalize — written out with PIL."""
    image = Image.open(path).convert("RGB")
    pixels = np.asarray(image.resize((224, 224), Image.Resampling.BILINEAR), dtype=np.float32) / 255.0
    return ((pixels - MEAN) / STD).transpose(2, 0, 1)
