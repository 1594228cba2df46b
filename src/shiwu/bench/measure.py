"""Measuring primitives shared by ``shiwu bench``, ``shiwu tune`` and benchmarks/: timing
loops, percentiles, peak memory, and the photo views everything is compared on."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

VIEW_SEED = 7                    # not the int8 calibration's (1234) nor its check's (99)


def call_times(run: Callable[[], object], seconds: float, *, warmup: int = 2,
               min_calls: int = 5, max_calls: int = 100_000) -> list[float]:
    """Seconds per call of ``run()`` after ``warmup`` calls, for about ``seconds`` (at least
    ``min_calls`` calls)."""
    for _ in range(warmup):
        run()
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(times) < min_calls or (time.perf_counter() < deadline and len(times) < max_calls):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return times


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile, ``q`` in 0..100."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    k = (len(ordered) - 1) * q / 100
    low, high = math.floor(k), math.ceil(k)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM), in MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


# --- the photos everything is compared on --------------------------------------------------------

def agreement_photos(folder: str | Path | None, count: int) -> list[Path]:
    """The photos given (evenly sampled down to ``count``), else shiwu's bundled ones."""
    from ..calibrate import bundled_photos, photos_in

    photos = photos_in(folder, "--images folder") if folder else bundled_photos()
    if len(photos) > count:
        step = len(photos) / count
        photos = [photos[int(i * step)] for i in range(count)]
    return photos


def prepare_inputs(photos: Sequence[Path], preprocessings: dict, count: int,
                   seed: int = VIEW_SEED) -> tuple[dict, list[str]]:
    """``count`` views of the photos (each photo itself first, then random crops, flips and
    lighting), preprocessed at every size in ``preprocessings`` from the *same* views, so all
    sizes are compared on the same pictures. Returns {size: (N, 3, S, S) float32} and the
    photos that could not be read."""
    import numpy as np

    from ..calibrate import views
    from ..images import ImageError, load_image

    per_photo = max(1, -(-count // max(1, len(photos))))
    largest = max(p.resize_short for p in preprocessings.values())
    rng = np.random.default_rng(seed)
    arrays: dict[int, list] = {size: [] for size in preprocessings}
    unreadable = []
    for path in photos:
        try:
            photo = load_image(path, min_size=2 * largest)
        except ImageError:
            unreadable.append(str(path))
            continue
        short = min(photo.size)
        if short > 2 * largest:  # views of a 12-megapixel photo need not be 12 megapixels
            scale = 2 * largest / short
            photo = photo.resize((max(1, round(photo.width * scale)), max(1, round(photo.height * scale))))
        for view in views(photo, per_photo, rng):
            for size, pre in preprocessings.items():
                arrays[size].append(pre(view))
    if not arrays or not next(iter(arrays.values())):
        raise FileNotFoundError("none of the photos could be read")
    return {size: np.stack(a[:count]) for size, a in arrays.items()}, unreadable

