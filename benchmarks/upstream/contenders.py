"""Long-lived contender processes, timed in interleaved rounds: the method of the upstream comparisons.

Each contender (the official pipeline, shiwu with some setting) runs in its own process, so its
load time, peak RSS and worker threads are its own (idle OpenVINO threads slowed ONNX Runtime
3x when they shared a process), and stays alive. The coordinator sends the photos interleaved:
photo 1 to each contender in turn, photo 2 ..., the order rotated per photo, several rounds. On
a machine that other work shares, the load then drifts over all contenders alike, and the
ratios of the medians hold up better than the absolute figures.

Protocol: the worker prints one JSON line when ready (``{"name", "load_s", ...}`` or
``{"error"}``), then answers one JSON line per request read on stdin: ``{"photo": path}`` ->
``{"s", "cpu", "answer"}``; ``{"quit": true, ...}`` -> ``{"peak_rss_mb", ...}``.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

from bench_common import JsonWorker, current_rss_mb, peak_rss_mb

DEFAULT_ENTRY = "default"  # what a command with no flags runs: --backend auto --precision auto


# ----------------------------------------------------------------------------- worker side

def serve(build) -> int:
    """Run one contender: ``build()`` -> (name, predict(path) -> answer, info dict, finish(request) -> dict)."""
    start = time.perf_counter()
    answer = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # anything the libraries print goes to stderr, not into the answers

    def say(message):
        answer.write(json.dumps(message, ensure_ascii=False) + "\n")
        answer.flush()

    try:
        name, predict, info, finish = build()
    except Exception as exc:  # noqa: BLE001 - e.g. a precision the policy refuses: the coordinator says why
        say({"error": f"{type(exc).__name__}: {exc}"})
        return 0
    say({"name": name, "load_s": time.perf_counter() - start, "rss_loaded_mb": current_rss_mb(), **info})
    for line in sys.stdin:
        request = json.loads(line)
        if "photo" in request:
            wall, cpu = time.perf_counter(), time.process_time()
            result = predict(request["photo"])
            say({"s": time.perf_counter() - wall, "cpu": time.process_time() - cpu, "answer": result})
        else:
            say({"peak_rss_mb": peak_rss_mb(), **(finish(request) if finish else {})})
            break
    return 0


def shiwu_recognizer(model_dir: Path, entry: str, threads: int | None, refused: bool = False, **options):
    """shiwu as a user runs it: ``entry`` "default" (no flags) or backend[:precision]. Returns the
    Recognizer and what the row says: the runtime and precision chosen and how they were accepted.
    ``refused``: build an int8 model the accuracy policy refuses anyway, to time it (marked so)."""
    from shiwu import Recognizer

    if refused:
        from shiwu.backends import policy

        policy.require = lambda *args, **kwargs: None
    if entry == DEFAULT_ENTRY:
        chosen = {}
    else:
        backend, _, precision = entry.partition(":")
        chosen = {"backend": backend, "precision": precision or "fp32"}
    recognizer = Recognizer(str(model_dir), threads=threads, batch_size=1, **chosen, **options)
    backend = recognizer.backend
    return recognizer, {"runtime": backend.name, "precision": backend.precision,
                        "accepted_by": accepted_by(recognizer, refused),
                        "threads": getattr(backend, "threads", None)}


def accepted_by(recognizer, refused: bool = False) -> str:
    """How the accuracy policy admitted this setting, in the words of backends.policy."""
    backend = recognizer.backend
    if refused:
        return "NOT OFFERED: refused by the accuracy policy, timed anyway"
    if recognizer.settings.uses_tuned:
        return "shiwu tune's saved choice (--eval accuracy where it was given)"
    if backend.precision == "fp32":
        return "fp32: the reference"
    found = getattr(backend, "verdict", None)
    if found is None:  # an explicit bf16 / int8: the verdict the policy gives the same setting
        from shiwu.backends import policy

        found = policy.verdict(recognizer.spec, backend.name, backend.precision, recognizer.preprocessing.size,
                               threads=getattr(backend, "threads", None))
    state = "accepted" if found.accepted else "would be refused by --precision auto"
    return f"{found.basis}, {state}: {found.reason()}"


def auto_skipped(model_name: str) -> dict:
    """What --backend auto --precision auto measured and refused for this model (its cached choice)."""
    from shiwu.backends.auto import remembered_choices

    for choice in remembered_choices():
        if choice.get("model") == model_name and choice.get("precision") == "auto":
            return {"skipped": choice.get("skipped", {}), "ms_per_image": choice.get("ms_per_image", {})}
    return {}


# ----------------------------------------------------------------------------- coordinator side

class Contender(JsonWorker):
    """One worker process (``command``), asked one photo at a time."""

    def __init__(self, command: list[str], entry: str, env=None, refused: bool = False):
        super().__init__(command, env=env)
        self.entry, self.refused = entry, refused
        self.name = self.hello.get("name", entry)
        self.times, self.cpu, self.answers = [], [], {}

    def close(self, request: dict | None = None) -> dict:
        """The worker's last reply to ``quit`` (with ``request``), then the process ended."""
        reply = self.ask({"quit": True, **(request or {})}) if self.process.poll() is None else {}
        super().close()
        return reply

    @property
    def median(self) -> float:
        return statistics.median(self.times)


def start_shiwu_sides(command, entries: list[str], refused: dict, below_floor: list[str],
                      extra: tuple = (), env=None) -> list[Contender]:
    """A contender per entry not already refused (``command(python, side, *args)`` builds the
    worker's command line); those in ``below_floor`` are timed though the policy refuses them.
    An entry whose worker does not start joins ``refused`` with its error."""
    started = []
    for entry in [e for e in entries if e not in refused] + below_floor:
        print(f"starting {entry} ...", file=sys.stderr)
        arguments = ["--entry", entry, *extra] + (["--refused"] if entry in below_floor else [])
        contender = Contender(command(sys.executable, "shiwu", *arguments), entry, env, refused=entry in below_floor)
        if "error" in contender.hello:
            refused.setdefault(entry, contender.hello["error"])
            contender.close()
            continue
        started.append(contender)
    return started


def refusal(error: str) -> str:
    """The one line that says why a worker did not start (the exception's message)."""
    lines = error.strip().splitlines() or ["?"]
    return lines[-1] if not lines[0].startswith("worker exited") else f"{lines[0]} {lines[-1]}"


def interleave(contenders: list[Contender], photos: list[Path], rounds: int, warmup: int = 2) -> None:
    """Every photo to every contender, the order rotated per photo, ``rounds`` times."""
    for contender in contenders:  # warm-up: first calls allocate and pick kernels
        for path in photos[:warmup]:
            contender.ask({"photo": str(path)})
    for round_ in range(rounds):
        for i, path in enumerate(photos):
            shift = (round_ * len(photos) + i) % len(contenders)
            for contender in contenders[shift:] + contenders[:shift]:
                reply = contender.ask({"photo": str(path)})
                if "error" in reply:
                    raise SystemExit(f"{contender.name} failed on {path.name}: {reply['error']}")
                contender.times.append(reply["s"])
                contender.cpu.append(reply["cpu"])
                contender.answers[path.name] = reply["answer"]
                time.sleep(0.02)  # let the last one's worker threads go idle before the next


def goal_lines(official: Contender, shiwu: list[Contender], fp32_goal: float, reduced_goal: float,
               bounds: dict[str, tuple[float, str]] | None = None) -> list[str]:
    """Whether the issue's goals are met: the best fp32 row and the best *accepted* reduced row;
    with ``bounds`` (ceilings.speed_up_bounds), what this CPU allows at all."""
    base = official.median
    bounds = bounds or {}
    fp32 = [c for c in shiwu if c.hello.get("precision") == "fp32"]
    reduced = [c for c in shiwu if c.hello.get("precision") not in (None, "fp32") and not c.refused
               and "would be refused" not in c.hello.get("accepted_by", "")]
    reduced_bound = max((b for p, b in bounds.items() if p != "fp32"), default=None, key=lambda b: b[0])
    lines = []
    for label, rows, goal, bound in (("fp32", fp32, fp32_goal, bounds.get("fp32")),
                                     ("best accepted reduced precision", reduced, reduced_goal, reduced_bound)):
        allowed = "" if bound is None else (f"; this CPU allows {'it' if bound[0] >= goal else 'NOT even that'}: "
                                            f"{bound[1]}")
        if not rows:
            lines.append(f"goal {label} >= {goal:g}x: NOT measurable: no such row ran (see the refusals){allowed}")
            continue
        best = max(rows, key=lambda c: base / c.median)
        ratio = base / best.median
        how = "" if label == "fp32" else f"; {best.hello.get('accepted_by', '')}"
        lines.append(f"goal {label} >= {goal:g}x the official: {'met' if ratio >= goal else 'NOT met'} "
                     f"({best.name}, {ratio:.2f}x{how}){allowed}")
    return lines
