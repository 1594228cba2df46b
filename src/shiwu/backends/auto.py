"""``--backend auto``: measure the runtimes this machine has, once, and remember the fastest.

The choice is stored in the cache under a key made of everything that could change the answer:
model and weights, input size, precision, threads, the CPU, and the installed runtime versions.
Installing OpenVINO later, or moving to another CPU, makes shiwu measure again.
"""

from __future__ import annotations

import gc
import hashlib
import importlib.metadata
import json
import sys
import time

import numpy as np

from .. import cache
from .runtimes import BackendUnavailable, backend_class

# Candidates per precision, most likely winner first. torch.compile is left out: its first
# compilation takes longer than the whole measurement should; choose it with --backend compile.
CANDIDATES = {
    "fp32": ("openvino", "onnxruntime", "torchscript", "torch"),
    "bf16": ("openvino", "torch"),
    "int8": ("openvino", "onnxruntime"),
}
RUNTIME_DISTRIBUTIONS = ("torch", "onnxruntime", "openvino", "nncf", "intel-extension-for-pytorch")
MEASURE_SECONDS = 1.0


def _versions() -> dict[str, str | None]:
    out = {}
    for dist in RUNTIME_DISTRIBUTIONS:
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


def choice_path(spec, *, size: int, precision: str, threads: int):
    from ..version import __version__
    from ..cpu import cpu_flags, cpu_model

    key = json.dumps({
        "model": spec.name, "weights": spec.fingerprint(), "size": size,
        "precision": precision, "threads": threads, "cpu": cpu_model(),
        "flags": sorted(cpu_flags()), "versions": _versions(), "shiwu": __version__,
    }, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    return cache.cache_dir() / "auto" / f"{spec.name.replace('/', '_')}-{size}-{precision}-{digest}.json"


def time_backend(backend, batch: np.ndarray, seconds: float = MEASURE_SECONDS) -> float:
    """Median seconds per call after warm-up, measured for about ``seconds``."""
    for _ in range(3):
        backend.run(batch)
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(times) < 5 or (time.perf_counter() < deadline and len(times) < 200):
        start = time.perf_counter()
        backend.run(batch)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def select(spec, *, size: int, precision: str, threads: int | None, **options):
    """Return a ready backend: the remembered winner, or the winner of a fresh measurement."""
    from ..cpu import default_threads

    threads = threads or default_threads()
    path = choice_path(spec, size=size, precision=precision, threads=threads)
    remembered = cache.read_json(path).get("winner")
    if remembered:
        try:
            return backend_class(remembered)(spec, size=size, precision=precision, threads=threads, **options)
        except BackendUnavailable:
            pass  # the runtime went away since: measure again

    print(f"shiwu: measuring backends for {spec.name} ({size}px, {precision}, {threads} threads) "
          "on this CPU; done once, then remembered", file=sys.stderr)
    batch = np.random.default_rng(0).standard_normal((1, 3, size, size), dtype=np.float32)
    timings: dict[str, float] = {}
    skipped: dict[str, str] = {}
    best, best_time = None, float("inf")
    for name in (n for n in CANDIDATES.get(precision, ()) if spec.supports(n)):
        try:
            backend = backend_class(name)(spec, size=size, precision=precision, threads=threads, **options)
        except Exception as exc:  # noqa: BLE001 - one broken runtime must not stop the others
            reason = str(exc) if isinstance(exc, BackendUnavailable) else f"{type(exc).__name__}: {exc}"
            skipped[name] = reason
            print(f"shiwu:   {name:<12} skipped: {reason}", file=sys.stderr)
            continue
        seconds = time_backend(backend, batch)
        timings[name] = round(seconds * 1e3, 3)
        print(f"shiwu:   {name:<12} {seconds * 1e3:8.2f} ms per image", file=sys.stderr)
        if seconds < best_time:
            best, best_time = backend, seconds
        else:
            del backend
            gc.collect()  # a large model must not sit in memory twice
    if best is None:
        raise BackendUnavailable(f"no backend can run {precision} here: "
                                 + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    print(f"shiwu: using {best.name} for {spec.name} {precision}", file=sys.stderr)
    cache.atomic_write_text(path, json.dumps({
        "model": spec.name, "size": size, "precision": precision, "threads": threads,
        "winner": best.name, "ms_per_image": timings, "skipped": skipped,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }, ensure_ascii=False, indent=2))
    return best


def remembered_choices() -> list[dict]:
    folder = cache.cache_dir() / "auto"
    if not folder.is_dir():
        return []
    return [entry for entry in (cache.read_json(p) for p in sorted(folder.glob("*.json"))) if entry]
