"""``--backend auto``: measure the runtimes this machine has, once, and remember the fastest.

The runtimes are timed in interleaved rounds (A B C, A B C, ...), and each one's median over the
rounds decides: one noisy first sample (another process waking up) cannot pick the winner.

The choice is stored in the cache under a key made of everything that could change the answer:
model and weights, input size, precision, threads, the CPU, and the installed runtime versions.
Installing OpenVINO later, or moving to another CPU, makes shiwu measure again.
"""

from __future__ import annotations

import gc
import hashlib
import importlib.metadata
import json
import logging
import time

import numpy as np

from .. import cache
from .runtimes import PRECISIONS, BackendUnavailable, backend_class, distributions, runtimes_for

log = logging.getLogger(__name__)

# Candidates per precision, from the runtime table, most likely winner first. torch.compile is
# left out: its first compilation takes longer than the whole measurement should.
CANDIDATES = {p: runtimes_for(p, auto_only=True) for p in PRECISIONS}
CANDIDATES_ALL = tuple(dict.fromkeys(r for p in PRECISIONS for r in CANDIDATES[p]))
RUNTIME_DISTRIBUTIONS = distributions()
ROUNDS = 7                 # interleaved rounds; the median of each runtime's rounds decides
ROUND_SECONDS = 0.15       # time per runtime per round


def _versions() -> dict[str, str | None]:
    out = {}
    for dist in RUNTIME_DISTRIBUTIONS:
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


def choice_path(spec, *, size: int, precision: str, threads: int, backend: str = "auto",
                max_drop: float | None = None, calibration: str | None = None):
    from ..cpu import cpu_flags, cpu_model
    from ..version import __version__

    key = json.dumps({
        "model": spec.name, "weights": spec.fingerprint(), "size": size, "backend": backend,
        "precision": precision, "threads": threads, "cpu": cpu_model(), "max_drop": max_drop,
        "calibration": calibration, "flags": sorted(cpu_flags()), "versions": _versions(),
        "shiwu": __version__,
    }, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    return cache.cache_dir() / "auto" / f"{spec.name.replace('/', '_')}-{size}-{backend}-{precision}-{digest}.json"


def time_backend(backend, batch: np.ndarray, seconds: float = ROUND_SECONDS) -> float:
    """Median seconds per call over about ``seconds`` (at least 3 calls)."""
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(times) < 3 or (time.perf_counter() < deadline and len(times) < 100):
        start = time.perf_counter()
        backend.run(batch)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def interleaved_medians(backends: dict, batch: np.ndarray, rounds: int = ROUNDS,
                        seconds: float = ROUND_SECONDS) -> dict[str, dict]:
    """Each backend timed once per round, in turn, for ``rounds`` rounds (after one warm-up
    call each): {name: {"median_ms", "rounds_ms"}}. A slow moment of the machine lands on one
    round of every runtime alike, not on all the rounds of one."""
    for backend in backends.values():
        for _ in range(3):
            backend.run(batch)
    samples: dict[str, list[float]] = {name: [] for name in backends}
    for _ in range(rounds):
        for name, backend in backends.items():
            samples[name].append(time_backend(backend, batch, seconds) * 1e3)
    return {name: {"median_ms": round(float(np.median(ms)), 3), "rounds_ms": [round(m, 3) for m in ms]}
            for name, ms in samples.items()}


# --precision auto tries the reduced precisions first: when one passes, it is usually the faster
AUTO_PRECISIONS = ("int8", "bf16", "fp32")


def _candidates(spec, backend: str, precision: str) -> tuple[list[tuple[str, str]], dict[str, str]]:
    from ..cpu import cpu_flags
    from .runtimes import BY_NAME, cpu_lacks

    runtimes = CANDIDATES_ALL if backend == "auto" else (backend,)
    precisions = AUTO_PRECISIONS if precision == "auto" else (precision,)
    out, skipped = [], {}
    for p in precisions:
        lacks = cpu_lacks(p, cpu_flags()) if precision == "auto" else None
        for r in runtimes:
            if not (spec.supports(r) and BY_NAME[r].runs(p)):
                continue
            if lacks:
                skipped[f"{r} {p}"] = lacks
            else:
                out.append((r, p))
    return out, skipped


def _build(spec, runtime: str, precision: str, *, size, threads, calibration, **options):
    from .runtimes import BY_NAME

    if precision == "int8" and BY_NAME[runtime].calibration:
        options = {**options, "calibration": calibration}
    return backend_class(runtime)(spec, size=size, precision=precision, threads=threads, **options)


def _judged(spec, runtime: str, precision: str, *, size, threads, calibration, max_drop, options):
    """A ready backend for the setting, or the reason it is not offered (the accuracy policy)."""
    from . import policy

    if precision != "fp32":
        entry = policy.shipped_entry(spec, runtime, precision, size)
        if entry is not None and entry["drop"] > max_drop:  # known to fail: not even built
            return None, f"drop {entry['drop']:.2%} on {entry['photos']} labelled photos > {max_drop:.1%}"
    try:
        backend = _build(spec, runtime, precision, size=size, threads=threads, calibration=calibration,
                         **options)
    except Exception as exc:  # noqa: BLE001 - one broken runtime must not stop the others
        return None, str(exc) if isinstance(exc, BackendUnavailable) else f"{type(exc).__name__}: {exc}"
    if precision != "fp32":
        found = policy.verdict(spec, runtime, precision, size, max_drop=max_drop, backend=backend,
                               threads=threads, calibration=calibration)
        if not found.accepted:
            return None, found.reason()
        backend.verdict = found
    return backend, None


def select(spec, *, size: int, precision: str, threads: int | None, backend: str = "auto",
           max_drop: float | None = None, calibration: str | None = None, **options):
    """Return a ready backend: the remembered winner, or the winner of a fresh measurement over
    the (runtime, precision) settings that pass the accuracy policy on this CPU."""
    from ..cpu import default_threads
    from .policy import DEFAULT_MAX_DROP

    threads = threads or default_threads()
    max_drop = DEFAULT_MAX_DROP if max_drop is None else max_drop
    from ..calibrate import calibration_id
    calib = calibration_id(calibration) if precision in ("auto", "int8") else None
    path = choice_path(spec, size=size, precision=precision, threads=threads, backend=backend,
                       max_drop=max_drop, calibration=calib)
    remembered = cache.read_json(path)
    if remembered.get("winner"):
        chosen = remembered.get("winner_precision", precision)
        ready, why = _judged(spec, remembered["winner"], chosen, size=size, threads=threads,
                             calibration=calibration, max_drop=max_drop, options=options)
        if ready is not None:
            if precision == "auto":  # every run says which precision it chose, and on what grounds
                found = getattr(ready, "verdict", None)
                log.info("%s: %s %s%s", spec.name, ready.name, ready.precision,
                         f" ({found.basis}: {found.reason()})" if found is not None else " (the reference)")
            return ready  # else: the runtime went away since, or its verdict changed: measure again

    pairs, skipped = _candidates(spec, backend, precision)
    log.info("measuring backends for %s (%spx, %s %s, %s threads) on this CPU: accuracy first, then "
             "speed in %d interleaved rounds; done once, then remembered", spec.name, size, backend,
             precision, threads, ROUNDS)
    ready: dict[str, object] = {}
    for runtime, p in pairs:
        built, why = _judged(spec, runtime, p, size=size, threads=threads, calibration=calibration,
                             max_drop=max_drop, options=options)
        if built is None:
            skipped[f"{runtime} {p}"] = why
            log.info("  %-12s skipped: %s", runtime if precision != "auto" else f"{runtime} {p}", why)
        else:
            ready[f"{runtime} {p}"] = built
    if not ready:
        raise BackendUnavailable(f"no backend can run {precision} here: "
                                 + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    batch = np.random.default_rng(0).standard_normal((1, 3, size, size), dtype=np.float32)
    measured = interleaved_medians(ready, batch) if len(ready) > 1 else {
        name: {"median_ms": None, "rounds_ms": []} for name in ready}
    for name, m in measured.items():
        if m["median_ms"] is not None:
            log.info("  %-18s %8.2f ms per image (median of %d rounds)", name, m["median_ms"], len(m["rounds_ms"]))
    winner = min(measured, key=lambda n: measured[n]["median_ms"] or 0.0)
    best = ready.pop(winner)
    ready.clear()
    gc.collect()  # a large model must not sit in memory twice
    verdict = getattr(best, "verdict", None)
    log.info("using %s %s for %s%s", best.name, best.precision, spec.name,
             f" ({verdict.basis}: {verdict.reason()})" if verdict is not None else "")
    cache.atomic_write_text(path, json.dumps({
        "model": spec.name, "size": size, "precision": precision, "backend": backend,
        "threads": threads, "max_drop": max_drop, "winner": best.name, "winner_precision": best.precision,
        "ms_per_image": {n: m["median_ms"] for n, m in measured.items() if m["median_ms"] is not None},
        "rounds_ms": {n: m["rounds_ms"] for n, m in measured.items()}, "rounds": ROUNDS,
        "skipped": skipped, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }, ensure_ascii=False, indent=2))
    return best


def remembered_choices() -> list[dict]:
    folder = cache.cache_dir() / "auto"
    if not folder.is_dir():
        return []
    return [entry for entry in (cache.read_json(p) for p in sorted(folder.glob("*.json"))) if entry]
