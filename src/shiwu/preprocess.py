"""Resize, centre-crop and normalise RGB images into a float32 NCHW batch, with Pillow + numpy."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

CROP_RATIO = 0.875  # the classic ImageNet evaluation ratio: 224 / 256


@dataclass(frozen=True)
class Preprocessing:
    """How a model wants its pixels.

    ``mean`` and ``std`` are on the 0..255 scale, per RGB channel: a pixel value ``v`` becomes
    ``(v - mean) / std``.
    """

    size: int = 224
    crop_ratio: float = CROP_RATIO
    mean: tuple[float, float, float] = (127.0, 127.0, 127.0)
    std: tuple[float, float, float] = (128.0, 128.0, 128.0)
    resample: int = Image.Resampling.BILINEAR

    @property
    def resize_short(self) -> int:
        """Short side before the centre crop: 224 -> 256, 196 -> 224, 168 -> 192."""
        return int(round(self.size / self.crop_ratio))

    @property
    def decode_min_size(self) -> int | None:
        """Short side a JPEG may be draft-decoded down to before ``crop``; None = full size.
        (The ModelScope model decodes at full size, as its official pipeline does.)"""
        return self.resize_short

    def with_size(self, size: int) -> "Preprocessing":
        if not 32 <= size <= 1024:
            raise ValueError(f"input size must be between 32 and 1024 pixels, got {size}")
        return Preprocessing(size, self.crop_ratio, self.mean, self.std, self.resample)

    def __call__(self, image: Image.Image) -> np.ndarray:
        """One RGB image to a (3, size, size) float32 array."""
        return to_chw(self.crop(image), self.mean, self.std)

    def crop(self, image: Image.Image) -> Image.Image:
        """Resize the short side to ``resize_short``, then cut the centre ``size`` square."""
        width, height = image.size
        short = self.resize_short
        if width <= height:
            new_w, new_h = short, max(short, int(round(height * short / width)))
        else:
            new_w, new_h = max(short, int(round(width * short / height))), short
        sx, sy = new_w / width, new_h / height
        left = (new_w - self.size) // 2
        top = (new_h - self.size) // 2
        # Resizing only the crop window (box) gives the same pixels as resize-then-crop
        # without computing the ones the crop throws away.
        box = (left / sx, top / sy, (left + self.size) / sx, (top + self.size) / sy)
        return image.resize((self.size, self.size), self.resample, box=box)

    def batch(self, images) -> np.ndarray:
        """Several RGB images to one contiguous (N, 3, size, size) float32 batch."""
        out = np.empty((len(images), 3, self.size, self.size), dtype=np.float32)
        for i, image in enumerate(images):
            out[i] = self(image)
        return out


def to_chw(image: Image.Image, mean, std) -> np.ndarray:
    # Transpose the uint8 pixels (a free view) and convert straight into the CHW float output:
    # one pass over the data instead of float HWC, scale, shift and a transposing copy (3x faster).
    pixels = np.asarray(image).transpose(2, 0, 1)
    scale = (np.float32(1.0) / np.asarray(std, dtype=np.float32))[:, None, None]
    shift = (-np.asarray(mean, dtype=np.float32))[:, None, None] * scale
    out = np.empty(pixels.shape, dtype=np.float32)
    np.multiply(pixels, scale, out=out)
    out += shift
    return out
