"""Resize, centre-crop and normalise RGB images into a float32 NCHW batch, with Pillow + numpy."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

CROP_RATIO = 0.875  # the classic ImageNet evaluation ratio: 224 / 256
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)


@dataclass(frozen=True)
class Preprocessing:
    """How a model wants its pixels.

    ``mean`` and ``std`` are on the 0..255 scale, per RGB channel: a pixel value ``v`` becomes
    ``(v - mean) / std``. ``resize``: "crop" (short side to ``size / crop_ratio``, then the
    centre square) or "squash" (the whole image to ``size`` x ``size``, as torchvision's
    ``Resize((s, s))``). ``full_decode``: decode JPEGs at full size, never DCT-scaled, so the
    pixels are exactly those of a recipe that decodes fully and then resizes.
    """

    size: int = 224
    crop_ratio: float = CROP_RATIO
    mean: tuple[float, float, float] = (127.0, 127.0, 127.0)
    std: tuple[float, float, float] = (128.0, 128.0, 128.0)
    resample: int = Image.Resampling.BILINEAR
    resize: str = "crop"
    full_decode: bool = False

    @property
    def resize_short(self) -> int:
        """Short side before the centre crop: 224 -> 256, 196 -> 224, 168 -> 192."""
        return int(round(self.size / self.crop_ratio))

    @property
    def decode_min_size(self) -> int | None:
        """Short side a JPEG may be draft-decoded down to before ``crop``; None = full size.
        (The ModelScope model decodes at full size, as its official pipeline does.)"""
        if self.full_decode:
            return None
        return self.size if self.resize == "squash" else self.resize_short

    def with_size(self, size: int) -> "Preprocessing":
        if not 32 <= size <= 1024:
            raise ValueError(f"input size must be between 32 and 1024 pixels, got {size}")
        return replace(self, size=size)

    def __call__(self, image: Image.Image) -> np.ndarray:
        """One RGB image to a (3, size, size) float32 array."""
        return to_chw(self.crop(image), self.mean, self.std)

    def pixels(self, image: Image.Image) -> np.ndarray:
        """One RGB image to its cropped (size, size, 3) uint8 pixels, for runtimes that
        normalise inside the graph (backends.pixel_input): the same values ``__call__``
        would normalise, without the float copy."""
        return np.asarray(self.crop(image))

    def crop(self, image: Image.Image) -> Image.Image:
        """Resize the short side to ``resize_short``, then cut the centre ``size`` square
        (or, for "squash", resize the whole image to the square)."""
        if self.resize == "squash":
            return image.resize((self.size, self.size), self.resample)
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

    def normalise(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 (N, size, size, 3) pixels to the (N, 3, size, size) float32 batch."""
        out = np.empty((len(pixels), 3) + pixels.shape[1:3], dtype=np.float32)
        for i, image in enumerate(pixels):
            out[i] = to_chw(image, self.mean, self.std)
        return out

    def batch(self, images) -> np.ndarray:
        """Several RGB images to one contiguous (N, 3, size, size) float32 batch."""
        out = np.empty((len(images), 3, self.size, self.size), dtype=np.float32)
        for i, image in enumerate(images):
            out[i] = self(image)
        return out


@dataclass(frozen=True)
class TorchvisionPreprocessing(Preprocessing):
    """``transforms.Resize(short)`` + ``transforms.CenterCrop(size)`` on a PIL image, exactly.

    Differs from the base class in three small ways that can each move a pixel and so, on a
    close call, the top-1: the long side is truncated (``int``) not rounded, the crop offset is
    ``round((H - size) / 2)`` (half to even) not floor, and the resize covers the whole image
    before cropping (resizing only the crop box is faster but differs by one level in a few
    pixels). Build it with ``full_decode=True`` to match a recipe that decodes fully: JPEG draft
    (DCT-scaled) decoding gives other pixels than a full decode followed by a bilinear resize.
    """

    def crop(self, image: Image.Image) -> Image.Image:
        width, height = image.size
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = self.resize_short, int(self.resize_short * long / short)
        new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
        if (new_w, new_h) != (width, height):
            image = image.resize((new_w, new_h), self.resample)
        if new_w < self.size or new_h < self.size:  # only when size > resize_short
            raise ValueError(f"crop {self.size} is larger than the resized image {new_w}x{new_h}")
        top = int(round((new_h - self.size) / 2.0))
        left = int(round((new_w - self.size) / 2.0))
        return image.crop((left, top, left + self.size, top + self.size))



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
