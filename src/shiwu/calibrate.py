"""Real photos for int8 calibration and for measuring agreement with fp32.

Quantization needs representative activations; agreement needs photos the quantizer did not
see. Both use *views* of real photos: random crops, flips, scales and lighting of each photo,
the variation any photo collection has. shiwu ships nine photos for calibration
(``shiwu/calibration``); users give their own folder with ``--calibration DIR``.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from .images import IMAGE_SUFFIXES, ImageError, load_image  # IMAGE_SUFFIXES: gallery, eval use it
from .preprocess import Preprocessing


def bundled_photos() -> list[Path]:
    folder = resources.files("shiwu").joinpath("calibration")
    return sorted(Path(str(p)) for p in folder.iterdir() if Path(str(p)).suffix.lower() in IMAGE_SUFFIXES)


def photos_in(folder: str | Path, what: str = "calibration folder") -> list[Path]:
    """The photos under ``folder``; ``what`` names the option it came from in the error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{what} {folder} does not exist")
    photos = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not photos:
        raise FileNotFoundError(f"no images in {what} {folder}")
    return photos


def photo_set_id(photos: list[Path]) -> str:
    """Identifies a calibration set in cache keys: names, sizes and modification times."""
    digest = hashlib.sha256()
    for p in photos:
        stat = p.stat()
        digest.update(f"{p.name}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def views(image: Image.Image, count: int, rng: np.random.Generator) -> list[Image.Image]:
    """``count`` plausible photos of the same scene: the image itself, then random crops
    (30-100% of the area), mirror images and brightness / contrast / colour changes."""
    out = [image]
    width, height = image.size
    while len(out) < count:
        area = rng.uniform(0.3, 1.0) * width * height
        aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        w = int(min(width, round(np.sqrt(area * aspect))))
        h = int(min(height, round(np.sqrt(area / aspect))))
        left = int(rng.integers(0, width - w + 1))
        top = int(rng.integers(0, height - h + 1))
        view = image.crop((left, top, left + w, top + h))
        if rng.random() < 0.5:
            view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        view = ImageEnhance.Brightness(view).enhance(rng.uniform(0.7, 1.3))
        view = ImageEnhance.Contrast(view).enhance(rng.uniform(0.7, 1.3))
        view = ImageEnhance.Color(view).enhance(rng.uniform(0.7, 1.3))
        out.append(view)
    return out


def view_batch(photos: list[Path], preprocessing: Preprocessing, per_photo: int, seed: int = 0) -> np.ndarray:
    """A (N, 3, S, S) float32 batch of ``per_photo`` views of each readable photo."""
    rng = np.random.default_rng(seed)
    images = []
    for path in photos:
        try:
            photo = load_image(path, min_size=2 * preprocessing.resize_short)
        except ImageError:
            continue
        images.extend(views(photo, per_photo, rng))
    if not images:
        raise FileNotFoundError("no readable calibration photos")
    return preprocessing.batch(images)


def _calibration_photos(folder: str | Path | None) -> list[Path]:
    return photos_in(folder) if folder else bundled_photos()


def calibration_id(folder: str | Path | None = None, count: int = 128) -> str:
    """Names a calibration set in cache keys without decoding it."""
    photos = _calibration_photos(folder)
    return f"{'user' if folder else 'bundled'}-{photo_set_id(photos)}-{count}"


def calibration_batch(preprocessing: Preprocessing, folder: str | Path | None = None,
                      count: int = 128) -> np.ndarray:
    """Calibration inputs: views of the bundled photos, or of the photos in ``folder``."""
    photos = _calibration_photos(folder)
    per_photo = max(1, -(-count // len(photos)))
    return view_batch(photos, preprocessing, per_photo, seed=1234)[:count]


def top1_agreement(reference_logits: np.ndarray, logits: np.ndarray) -> float:
    return float(np.mean(reference_logits.argmax(1) == logits.argmax(1)))
