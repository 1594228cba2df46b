"""Real photos, edited copies of them, and their EfficientNet-Lite0 embeddings: the data the
index benchmarks (dedupe_threshold.py, search.py) are measured on.

The embedding is ``Recognizer.logits_and_embeddings``'s: the 1280-d pooled features that feed
the classifier, L2-normalised.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

ROOT = Path(__file__).resolve().parent.parent
PHOTO_DIRS = (ROOT / "tests" / "data", ROOT / "src" / "shiwu" / "calibration")
SUFFIXES = {".jpg", ".jpeg", ".png"}


def scene_of(path: Path) -> str:
    """Files of one scene: tests/data and calibration hold re-encodings of the same
    scikit-image photos, and chelsea comes as .jpg and .png. The motorcycle is a stereo pair:
    the same scene from two viewpoints, kept as one scene so that it never counts as unrelated."""
    stem = path.stem.lower()
    return "motorcycle" if stem.startswith("motorcycle") else stem


def photo_files(extra_dirs: list[Path] = ()) -> list[Path]:
    files = []
    for folder in (*PHOTO_DIRS, *extra_dirs):
        files += sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES)
    return files


def open_rgb(path: Path) -> Image.Image:
    image = Image.open(path)
    image.load()
    return image.convert("RGB")


def jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def crop(image: Image.Image, fraction: float, anchor: str = "centre") -> Image.Image:
    width, height = image.size
    w, h = int(width * fraction), int(height * fraction)
    left, top = {"centre": ((width - w) // 2, (height - h) // 2), "corner": (0, 0),
                 "far": (width - w, height - h)}[anchor]
    return image.crop((left, top, left + w, top + h))


def resize(image: Image.Image, scale: float) -> Image.Image:
    width, height = image.size
    return image.resize((max(32, int(width * scale)), max(32, int(height * scale))),
                        Image.Resampling.LANCZOS)


# kind -> list of (name, edit): the copies a photo collection really accumulates
COPY_KINDS = {
    "resized": [(f"x{s}", lambda im, s=s: jpeg(resize(im, s), 90)) for s in (0.25, 0.5, 0.75)],
    "recompressed": [(f"q{q}", lambda im, q=q: jpeg(im, q)) for q in (30, 50, 70, 90)],
    "cropped": [(f"{int(f * 100)}%-{a}", lambda im, f=f, a=a: jpeg(crop(im, f, a), 90))
                for f in (0.8, 0.85, 0.9, 0.95) for a in ("centre", "corner", "far")],
    "brightened": [(f"b{b}", lambda im, b=b: jpeg(ImageEnhance.Brightness(im).enhance(b), 90))
                   for b in (0.7, 1.2, 1.4)],
    "grayscale": [("gray", lambda im: jpeg(ImageOps.grayscale(im).convert("RGB"), 90))],
    "combined": [("x0.5-q50-90%", lambda im: jpeg(crop(resize(im, 0.5), 0.9), 50)),
                 ("x0.75-q70-b1.2", lambda im: jpeg(ImageEnhance.Brightness(resize(im, 0.75))
                                                    .enhance(1.2), 70))],
}


def halves(image: Image.Image) -> tuple[Image.Image, Image.Image]:
    """Two non-overlapping parts of one photo: same content and style, no shared pixels
    (a stand-in for "another photo of the same thing")."""
    width, height = image.size
    if width >= height:
        return image.crop((0, 0, width // 2, height)), image.crop((width // 2, 0, width, height))
    return image.crop((0, 0, width, height // 2)), image.crop((0, height // 2, width, height))


@dataclass
class Embedder:
    """EfficientNet-Lite0 (torch backend, fp32) features: (N, 1280) L2-normalised float32."""

    batch_size: int = 16

    def __post_init__(self):
        from shiwu import Recognizer

        self.recognizer = Recognizer(backend="torch")

    @property
    def model_name(self) -> str:
        return self.recognizer.model_name

    def __call__(self, images: list[Image.Image]) -> np.ndarray:
        out = []
        for start in range(0, len(images), self.batch_size):
            batch = self.recognizer.preprocessing.batch(images[start:start + self.batch_size])
            out.append(self.recognizer.logits_and_embeddings(batch)[1])
        return np.concatenate(out)
