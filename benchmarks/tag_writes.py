"""The cost of `shiwu tag`'s writes, without the model: per photo, a sidecar write and an
embedded (--in-place) write with its read-back checks (keywords, every other tag, decoded pixels),
and the pHash fingerprint that `shiwu dedupe --tier near` computes per photo.

    python benchmarks/tag_writes.py --photos 40 --megapixels 12

Photos are generated (noise over a gradient, saved as JPEG q90 with EXIF), so the numbers
depend on the machine and its disk, not on a photo collection. Run on a quiet machine.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from PIL import Image

from shiwu.fingerprints import fingerprints
from shiwu.postprocess import Prediction
from shiwu.tagging import ExifTool, TagSettings, tag_photos


def make_photos(folder: Path, count: int, megapixels: float) -> list[str]:
    width = int((megapixels * 1e6 * 4 / 3) ** 0.5)
    height = int(width * 3 / 4)
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 200, width, dtype=np.float32)[None, :, None]
    paths = []
    for i in range(count):
        pixels = np.clip(ramp + rng.normal(0, 25, (height, width, 3)), 0, 255).astype(np.uint8)
        exif = Image.Exif()
        exif[0x010F] = "Camera"
        path = folder / f"{i:04d}.jpg"
        Image.fromarray(pixels).save(path, quality=90, exif=exif.tobytes())
        paths.append(str(path))
    return paths


def recognize(paths):
    for _ in paths:
        yield SimpleNamespace(error=None, predictions=[Prediction("猫", "cat", 0, 0.9),
                                                       Prediction("狗", "dog", 1, 0.5)])


def timed(label: str, count: int, work) -> None:
    start = time.perf_counter()
    work()
    seconds = time.perf_counter() - start
    print(f"{label:<34} {seconds / count * 1000:8.1f} ms/photo  ({count} photos, {seconds:.1f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=40)
    parser.add_argument("--megapixels", type=float, default=12.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, ExifTool() as tool:
        paths = make_photos(Path(folder), args.photos, args.megapixels)
        print(f"{args.photos} JPEGs of {args.megapixels} MP, q90, "
              f"{sum(Path(p).stat().st_size for p in paths) / len(paths) / 1e6:.1f} MB each")
        timed("sidecar write", len(paths),
              lambda: list(tag_photos(paths, TagSettings(), tool, recognize=recognize)))
        timed("sidecar, second run (no change)", len(paths),
              lambda: list(tag_photos(paths, TagSettings(), tool, recognize=recognize)))
        timed("--in-place write + checks", len(paths),
              lambda: list(tag_photos(paths, TagSettings(in_place=True), tool, recognize=recognize)))
        timed("pHash fingerprint (dedupe near)", len(paths), lambda: fingerprints(paths))


if __name__ == "__main__":
    main()
