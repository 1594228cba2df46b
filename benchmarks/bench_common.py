"""What every benchmark script repeats: the repository's paths, timing, memory, ratio and table
formatting, and writing what a run printed to ``benchmarks/results/<name>.md`` with the date, the
machine and the command, so every figure in the docs points at a file.

A script in a sub-folder puts ``benchmarks/`` on ``sys.path`` and imports this module:

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: bench_common
    from bench_common import ROOT, record_run

and ends with ``sys.exit(record_run("<name>", main))``. ``SHIWU_BENCH_RESULTS=DIR`` writes the
results elsewhere (a quick trial run then leaves the recorded figures alone).
"""

from __future__ import annotations

import datetime
import io
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
PHOTOS = ROOT / "tests" / "data"
# child processes of a benchmark (its official / shiwu sides) print JSON for the parent to read:
# only the parent's run is a result
CHILD_FLAGS = ("--child", "--worker")


# --- timing -----------------------------------------------------------------------------------

def call_seconds(run, calls: int, warmup: int = 1) -> list[float]:
    """Seconds of each of ``calls`` calls of ``run()``, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        run()
    seconds = []
    for _ in range(calls):
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
    return seconds


def median_ms(run, calls: int, warmup: int = 3) -> float:
    return statistics.median(call_seconds(run, calls, warmup)) * 1e3


def percentile(values, q: float) -> float:
    """The q-th percentile (0-100) by nearest rank; nan for no values."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


# --- memory -----------------------------------------------------------------------------------

def peak_rss_mb() -> float:
    """This process's peak resident memory (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


# --- formatting -------------------------------------------------------------------------------

def speedup(baseline: float, value: float) -> str:
    """How many times faster a time ``value`` is than ``baseline``: '2.99x'."""
    return f"{baseline / value:.2f}x" if value > 0 else "–"


def load_note() -> str:
    """', load average 1.4' (what other programs were doing to the timings), or ''."""
    try:
        return f", load average {os.getloadavg()[0]:.1f}"
    except OSError:
        return ""


def markdown_table(headers: list[str], rows: list[list]) -> str:
    """A Markdown table with aligned columns (a row shorter than the headers is padded):
    readable in a terminal and rendered in ``results/<name>.md``."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] + [""] * (len(headers) - len(row))
                                            for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def print_table(headers: list[str], rows: list[list]) -> None:
    print(markdown_table(headers, rows), flush=True)


# --- recording --------------------------------------------------------------------------------

def machine() -> dict:
    """What the figures depend on: CPU, cores, load, versions, commit, time."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    try:
        from shiwu.version import __version__ as shiwu_version
    except ImportError:
        shiwu_version = "?"
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load average": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "python": platform.python_version(),
        "shiwu": shiwu_version,
        "commit": commit or "?",
    }


def results_dir() -> Path:
    return Path(os.environ.get("SHIWU_BENCH_RESULTS") or BENCHMARKS / "results")


class _Tee(io.TextIOBase):
    """Writes to the terminal and keeps a copy."""

    def __init__(self, stream):
        self.stream, self.copy = stream, io.StringIO()

    def write(self, text):
        self.stream.write(text)
        self.copy.write(text)
        return len(text)

    def flush(self):
        self.stream.flush()


def record_run(name: str, main, argv: list[str] | None = None) -> int:
    """Run ``main()`` and, when it finishes, write what it printed to ``results/<name>.md``.

    ``--help`` and usage errors (SystemExit from argparse) and a child process's run record
    nothing; an exception records nothing either, so a result file is always a complete run."""
    argv = sys.argv if argv is None else argv
    if any(flag in argv for flag in CHILD_FLAGS):
        return main() or 0
    started = machine()
    tee = _Tee(sys.stdout)
    sys.stdout = tee
    try:
        status = main() or 0
    finally:
        sys.stdout = tee.stream
    from shiwu.fsutil import atomic_write  # here: a child side may run where shiwu is not installed

    path = results_dir() / f"{name}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    command = "python " + shlex.join([str(Path(argv[0]).resolve().relative_to(ROOT))
                                      if Path(argv[0]).resolve().is_relative_to(ROOT) else argv[0],
                                      *argv[1:]])
    header = "\n".join(f"- {key}: {value}" for key, value in started.items())
    atomic_write(path, f"# {name}\n\n```bash\n{command}\n```\n\n{header}\n- exit code: {status}\n\n"
                    f"```text\n{tee.copy.getvalue().rstrip()}\n```\n")
    print(f"results written to {path}", file=sys.stderr)
    return status


def model_gflop(network, size: int) -> float:
    """FLOPs (2 per multiply-add) of one image, counted by torch's FlopCounterMode: convolutions
    and matrix products whatever their shapes (a ViT's linear layers act on every token)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        network(torch.zeros(1, 3, size, size))
    return counter.get_total_flops() / 1e9


# --- sides in their own processes -------------------------------------------------------------

class JsonWorker:
    """A long-lived child process answering one JSON line per JSON request line.

    Benchmarks run each side (a runtime, the upstream recipe) in its own process so that one
    runtime's idle threads cannot slow another (idle OpenVINO threads slowed ONNX Runtime 3x in
    one process), and ask the sides in turn, round after round, so drift in the machine's load
    falls on every side alike. The child's first line is its greeting; its stderr is kept for the
    error a dead child reports."""

    def __init__(self, command: list[str], env=None):
        import tempfile

        self.stderr = tempfile.TemporaryFile()
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=self.stderr, text=True, encoding="utf-8", env=env)
        self.hello = self.ask(None)

    def ask(self, request) -> dict:
        import json

        if request is not None:
            try:
                self.process.stdin.write(json.dumps(request, ensure_ascii=False) + "\n")
                self.process.stdin.flush()
            except BrokenPipeError:
                pass
        line = self.process.stdout.readline()
        if not line:
            self.process.wait()
            self.stderr.seek(0)
            tail = self.stderr.read().decode("utf-8", "replace")[-3000:]
            return {"error": f"worker exited ({self.process.returncode}):\n{tail}"}
        return json.loads(line)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.stderr.close()


def serve_requests(answer) -> int:
    """The child's side of JsonWorker: ``answer(request) -> dict`` for each stdin line, each
    reply one line on stdout (which the side's own prints must not use: they go to stderr)."""
    import json

    out = sys.stdout
    sys.stdout = sys.stderr

    def say(message: dict) -> None:
        out.write(json.dumps(message, ensure_ascii=False) + "\n")
        out.flush()

    say(answer(None))
    for line in sys.stdin:
        say(answer(json.loads(line)))
    return 0
