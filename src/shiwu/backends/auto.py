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
from dataclasses import dataclass, field

import numpy as np

from .. import cache
from ..cpu import OthersLoad
from .runtimes import PRECISIONS, BackendUnavailable, backend_class, distributions, runtimes_for

log = logging.getLogger(__name__)
_SAID: set[tuple] = set()  # the settings this process has named already (batch builds one per stream)

# Candidates per precision, from the runtime table, most likely winner first. torch.compile is
# left out: its first compilation takes longer than the whole measurement should.
CANDIDATES = {p: runtimes_for(p, auto_only=True) for p in PRECISIONS}
CANDIDATES_ALL = tuple(dict.fromkeys(r for p in PRECISIONS for r in CANDIDATES[p]))
RUNTIME_DISTRIBUTIONS = distributions()
ROUNDS = 7                 # interleaved rounds; the median of each runtime's rounds decides
ROUND_SECONDS = 0.15       # time per runtime per round
SCREEN_ROUNDS = 2          # rounds every candidate runs before the clearly slower ones are dropped
ELIMINATE_RATIO = 1.5      # "clearly slower": a median over 1.5x the fastest accepted one's
# Other programs' share of our CPUs during the rounds above which the choice is provisional: on a
# busy machine ONNX Runtime's spinning threads lose more than OpenVINO's (the README's first run
# right after pip, with CI's tests beside it, timed onnxruntime fp32 at 20.9 ms against openvino's
# 13.5 ms; quiet, 8.8 against 10.5). A provisional choice is measured again by a later run that
# finds the machine quiet, at most REMEASURES times in all.
CONTENDED = 0.25
REMEASURES = 3
QUIET_PROBE_SECONDS = 0.2


def _versions() -> dict[str, str | None]:
    out = {}
    for dist in RUNTIME_DISTRIBUTIONS:
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


def _measured_with() -> dict:
    """The machine and software a measurement holds for (in its key, and written beside it so
    that ``shiwu doctor`` can tell the choices in use from those of another setup)."""
    from ..cpu import cpu_flags, cpu_model
    from ..version import __version__

    return {"cpu": cpu_model(), "flags": sorted(cpu_flags()), "versions": _versions(), "shiwu": __version__}


def choice_path(spec, *, size: int, precision: str, threads: int, backend: str = "auto",
                max_drop: float | None = None, calibration: str | None = None):
    key = json.dumps({
        "model": spec.name, "weights": spec.fingerprint(), "size": size, "backend": backend,
        "precision": precision, "threads": threads, "max_drop": max_drop, "calibration": calibration,
        **_measured_with(), **spec.graph_fields(),
    }, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    return cache.find("auto", f"{spec.name.replace('/', '_')}-{size}-{backend}-{precision}-{digest}.json")


def time_backend(backend, batch: np.ndarray, seconds: float = ROUND_SECONDS) -> float:
    """Median seconds per call over about ``seconds`` (at least one call: a runtime ten times
    slower than the others is not given three calls a round to prove it)."""
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while not times or (time.perf_counter() < deadline and len(times) < 100):
        start = time.perf_counter()
        backend.run(batch)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def warm_up(backends: dict, batch: np.ndarray, seconds: float = ROUND_SECONDS) -> None:
    """Up to three untimed calls each (the first calls allocate and compile), within ``seconds``."""
    for backend in backends.values():
        deadline = time.perf_counter() + seconds
        for _ in range(3):
            backend.run(batch)
            if time.perf_counter() > deadline:
                break


def timed_rounds(backends: dict, batch: np.ndarray, samples: dict[str, list[float]], rounds: int,
                 seconds: float = ROUND_SECONDS) -> None:
    """Each backend timed once per round, in turn, appending ms to ``samples[name]``: a slow
    moment of the machine lands on one round of every runtime alike, not on all the rounds of one."""
    for _ in range(rounds):
        for name, backend in backends.items():
            samples.setdefault(name, []).append(time_backend(backend, batch, seconds) * 1e3)


def _summary(ms: list[float]) -> dict:
    return {"median_ms": round(float(np.median(ms)), 3), "rounds_ms": [round(m, 3) for m in ms]}


def interleaved_medians(backends: dict, batch: np.ndarray, rounds: int = ROUNDS,
                        seconds: float = ROUND_SECONDS) -> dict[str, dict]:
    """{name: {"median_ms", "rounds_ms"}} of ``rounds`` interleaved rounds, after a warm-up."""
    warm_up(backends, batch, seconds)
    samples: dict[str, list[float]] = {}
    timed_rounds(backends, batch, samples, rounds, seconds)
    return {name: _summary(ms) for name, ms in samples.items()}


@dataclass
class Race:
    """The outcome of ``race``: the winner, every finisher's timings, and why the others are out."""

    winner: str | None = None
    samples: dict[str, list[float]] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)       # by the accuracy policy
    eliminated: dict[str, str] = field(default_factory=dict)    # clearly slower: not judged

    def finishers(self) -> dict[str, dict]:
        return {n: _summary(ms) for n, ms in self.samples.items()
                if n not in self.refused and n not in self.eliminated}


def race(backends: dict, batch: np.ndarray, judge, *, rounds: int = ROUNDS, screen: int = SCREEN_ROUNDS,
         ratio: float = ELIMINATE_RATIO, seconds: float = ROUND_SECONDS) -> Race:
    """The fastest backend that ``judge(name, backend)`` accepts (it returns None, else the reason
    it refuses), by successive elimination: ``screen`` interleaved rounds for all; then the
    accuracy verdicts in order of speed up to the first accepted one; the settings over ``ratio``
    times its median are out without a verdict (they cannot win); the close ones are judged and
    run the rest of the ``rounds``, and the lowest median over all rounds wins. The winner is the
    one measuring every setting for ``rounds`` would pick, without the slow ones' rounds and
    verdicts (torch eager at 30-80 ms a call next to 3 ms ones)."""
    out = Race()
    if len(backends) > 1:
        warm_up(backends, batch, seconds)
        timed_rounds(backends, batch, out.samples, screen, seconds)
        log.debug("after %d rounds: %s", screen, ", ".join(
            f"{n} {np.median(ms):.2f} ms" for n, ms in sorted(out.samples.items(), key=lambda i: np.median(i[1]))))
    median = lambda name: float(np.median(out.samples[name])) if out.samples.get(name) else 0.0  # noqa: E731
    judged: set[str] = set()

    def passes(name: str) -> bool:
        judged.add(name)
        why = judge(name, backends[name])
        if why is not None:
            out.refused[name] = why
        return why is None

    order = sorted(backends, key=median)
    fastest = next((n for n in order if passes(n)), None)
    if fastest is None:
        return out
    for name in order:
        if name not in judged and median(name) > ratio * median(fastest):
            out.eliminated[name] = (f"{median(name):.2f} ms, over {ratio:g}x {fastest}'s "
                                    f"{median(fastest):.2f} ms after {screen} rounds: not judged")
    close = [n for n in order if n not in out.eliminated and (n in judged or passes(n))]
    close = [n for n in close if n not in out.refused]
    if len(close) > 1:
        timed_rounds({n: backends[n] for n in close}, batch, out.samples, rounds - screen, seconds)
    out.winner = min(close, key=median)
    return out


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


def _none_can_run(backend: str, precision: str, skipped: dict[str, str]) -> str:
    """Why nothing ran: "no backend can run int8 here: …", "--backend ipex cannot run here: …"
    (precision auto is a choice, not a precision to name), each setting with its reason."""
    who = "no backend can run" if backend == "auto" else f"--backend {backend} cannot run"
    what = "" if precision == "auto" else f" {precision}"
    return f"{who}{what} here: " + "; ".join(f"{k}: {v}" for k, v in skipped.items())


def _build(spec, runtime: str, precision: str, *, size, threads, calibration, **options):
    from .runtimes import BY_NAME

    if precision == "int8" and BY_NAME[runtime].calibration:
        options = {**options, "calibration": calibration}
    return backend_class(runtime)(spec, size=size, precision=precision, threads=threads, **options)


def _prepared(spec, runtime: str, precision: str, *, size, threads, calibration, max_drop, options):
    """The setting's backend, built (not yet judged), or the reason it is not offered."""
    from . import policy

    if precision != "fp32":
        entry = policy.shipped_entry(spec, runtime, precision, size)
        if entry is not None and entry["drop"] > max_drop:  # known to fail: not even built
            return None, f"drop {entry['drop']:.2%} on {entry['photos']} labelled photos > {max_drop:.1%}"
    try:
        return _build(spec, runtime, precision, size=size, threads=threads, calibration=calibration,
                      **options), None
    except cache.CacheFull as exc:  # said as it is when no other setting can run
        return None, exc
    except Exception as exc:  # noqa: BLE001 - one broken runtime must not stop the others
        return None, str(exc) if isinstance(exc, BackendUnavailable) else f"{type(exc).__name__}: {exc}"


def _judge(spec, backend, *, size, threads, calibration, max_drop) -> str | None:
    """None when the accuracy policy accepts ``backend``'s setting (its verdict kept on it),
    else the reason it refuses."""
    from . import policy

    if backend.precision == "fp32":
        return None  # the reference (another size is the person's own choice, as before)
    found = policy.verdict(spec, backend.name, backend.precision, size, max_drop=max_drop, backend=backend,
                           threads=threads, calibration=calibration)
    if not found.accepted:
        return found.reason()
    backend.verdict = found
    return None


def _judged(spec, runtime: str, precision: str, *, size, threads, calibration, max_drop, options):
    """A ready backend for the setting, or the reason it is not offered (the accuracy policy)."""
    backend, why = _prepared(spec, runtime, precision, size=size, threads=threads, calibration=calibration,
                             max_drop=max_drop, options=options)
    if backend is not None:
        why = _judge(spec, backend, size=size, threads=threads, calibration=calibration, max_drop=max_drop)
    return (backend, None) if why is None else (None, why)


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
    if remembered.get("winner") and not _measure_again(remembered):
        chosen = remembered.get("winner_precision", precision)
        ready, why = _judged(spec, remembered["winner"], chosen, size=size, threads=threads,
                             calibration=calibration, max_drop=max_drop, options=options)
        if ready is not None:
            said = (spec.name, ready.name, ready.precision, size)
            if precision == "auto" and said not in _SAID:  # every run says which precision it
                _SAID.add(said)  # chose, and on what grounds: once, not once per batch stream
                found = getattr(ready, "verdict", None)
                log.info("%s: %s %s%s", spec.name, ready.name, ready.precision,
                         f" ({found.basis}: {found.reason(detail=False)})" if found is not None
                         else " (the reference)")
            return ready  # else: the runtime went away since, or its verdict changed: measure again

    pairs, skipped = _candidates(spec, backend, precision)
    reduced = any(p != "fp32" for _, p in pairs)
    log.info("measuring backends for %s (%spx, backend %s, precision %s, %s threads) on this machine, "
             "once: %d setting(s) built (exported%s where not cached yet), %stimed in interleaved rounds; "
             "this takes %s, later runs reuse the choice", spec.name, size, backend, precision, threads,
             len(pairs), ", int8 quantized" if any(p == "int8" for _, p in pairs) else "",
             "their accuracy checked, " if reduced else "", "up to a minute" if reduced else "a few seconds")
    label = (lambda r, p: r) if precision != "auto" else (lambda r, p: f"{r} {p}")  # noqa: E731
    built: dict[str, object] = {}
    full = None  # a setting whose export found the cache's disk full: what to say if none runs
    for runtime, p in pairs:
        ready, why = _prepared(spec, runtime, p, size=size, threads=threads, calibration=calibration,
                               max_drop=max_drop, options=options)
        if ready is None:
            full = why if isinstance(why, cache.CacheFull) else full
            skipped[f"{runtime} {p}"] = str(why)
            log.info("  %-12s skipped: %s", label(runtime, p), why)
        else:
            built[f"{runtime} {p}"] = ready
    if not built:
        if full is not None:
            raise full
        raise BackendUnavailable(_none_can_run(backend, precision, skipped))
    batch = np.random.default_rng(0).standard_normal((1, 3, size, size), dtype=np.float32)
    judge = lambda name, ready: _judge(spec, ready, size=size, threads=threads,  # noqa: E731
                                       calibration=calibration, max_drop=max_drop)
    others = OthersLoad()
    outcome = race(built, batch, judge)
    contended = round(others.share(), 3)
    if contended > CONTENDED:
        log.info("other programs used %.0f%% of these CPUs while the runtimes were timed: this choice is "
                 "measured again by a later run that finds the machine quiet", 100 * contended)
    for name, why in outcome.refused.items():
        skipped[name] = why
        log.info("  %-12s skipped: %s", label(*name.split(" ")), why)
    for name, why in outcome.eliminated.items():
        log.info("  %-18s eliminated: %s", name, why)
    measured = outcome.finishers()
    for name, m in measured.items():
        log.info("  %-18s %8.2f ms per image (median of %d rounds)", name, m["median_ms"], len(m["rounds_ms"]))
    if outcome.winner is None:
        raise BackendUnavailable(_none_can_run(backend, precision, skipped))
    best = built.pop(outcome.winner)
    built.clear()
    gc.collect()  # a large model must not sit in memory twice
    verdict = getattr(best, "verdict", None)
    log.info("using %s %s for %s%s", best.name, best.precision, spec.name,
             f" ({verdict.basis}: {verdict.reason()})" if verdict is not None else "")
    if full is not None:  # a choice made without the settings a full disk kept out is not kept
        log.info("not remembering this choice: %s; measured again once the cache has room", full)
        return best
    cache.atomic_write_text(path, json.dumps({
        "model": spec.name, "size": size, "precision": precision, "backend": backend,
        "threads": threads, "max_drop": max_drop, "winner": best.name, "winner_precision": best.precision,
        "ms_per_image": {n: m["median_ms"] for n, m in measured.items()},
        "rounds_ms": {n: [round(ms, 3) for ms in v] for n, v in outcome.samples.items()},
        "rounds": ROUNDS, "skipped": skipped, "eliminated": outcome.eliminated,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "measured_with": _measured_with(),
        "others_cpu": contended, "provisional": contended > CONTENDED,
        "attempts": remembered.get("attempts", 0) + 1 if remembered.get("winner") else 1,
    }, ensure_ascii=False, indent=2))
    return best


def _measure_again(remembered: dict) -> bool:
    """Whether a remembered choice timed while other programs competed is to be measured again
    now: the machine is quiet (a short look at what others use of our CPUs) and it has not been
    measured REMEASURES times already."""
    if not remembered.get("provisional") or remembered.get("attempts", 1) >= REMEASURES:
        return False
    probe = OthersLoad()
    time.sleep(QUIET_PROBE_SECONDS)
    if probe.share() > CONTENDED:
        return False
    log.info("the remembered choice (%s) was timed while other programs used %.0f%% of these CPUs; the "
             "machine is quiet now: measuring again", remembered["winner"], 100 * remembered.get("others_cpu", 0))
    return True


def remembered_choices() -> list[dict]:
    """Every remembered choice, each with ``current``: whether it was measured on this machine
    with these runtimes and this shiwu (False: kept, but no run here looks it up; None: written
    before shiwu recorded that)."""
    now = _measured_with()
    entries = [entry for entry in (cache.read_json(p) for p in cache.memos("auto")) if entry]
    for entry in entries:
        entry["current"] = entry["measured_with"] == now if "measured_with" in entry else None
    return entries
