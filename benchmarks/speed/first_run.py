"""The first default run on a fresh machine: `shiwu predict PHOTO` with no flags, an empty cache
and no settings file, timed end to end, with where the seconds go.

The first run exports the model, quantizes it to int8, checks the shipped accuracy figures on
this machine and times the candidate (runtime, precision) settings (`--backend auto`
`--precision auto`); every later run reuses what it remembered. Each run gets its own empty
$SHIWU_CACHE and $SHIWU_CONFIG; the log lines (-v) are stamped with the seconds since the start,
so the breakdown of the median run shows which step took how long. With several ``--src``
folders (e.g. a checkout of an earlier commit's ``src``), the versions run in interleaved
rounds (A B, A B, ...) and the medians are compared: a busy moment falls on both alike.

``--choice-only`` keeps one warm cache (exports, int8 models, accuracy verdicts) and forgets only
`--backend auto`'s remembered choice before each run: many runs of the choice alone, to see how
often each version picks which setting on this machine.

    python benchmarks/speed/first_run.py [--rounds 3] [--src NAME=PATH ...] [--photo PHOTO] [--choice-only]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared helper
from bench_common import ROOT, print_table, record_run, speedup  # noqa: E402

SHIWU = Path(sys.executable).parent / "shiwu"


def one_run(src: str | None, photo: Path, warm: Path | None = None) -> dict:
    """Seconds of one first run, its stamped log lines and the setting its answer names (with
    ``warm``: that cache, without its remembered --backend auto choices)."""
    with tempfile.TemporaryDirectory(prefix="shiwu-first-run-") as folder:
        if warm is not None:
            shutil.rmtree(warm / "auto", ignore_errors=True)
        env = {**os.environ, "SHIWU_CACHE": str(warm or Path(folder) / "cache"),
               "SHIWU_CONFIG": str(Path(folder) / "config.toml")}
        if src:
            env["PYTHONPATH"] = src
        started = time.perf_counter()
        child = subprocess.Popen([str(SHIWU), "-v", "predict", "--json", str(photo)], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines = [(round(time.perf_counter() - started, 2), line.rstrip("\n")) for line in child.stderr]
        out = child.stdout.read()
        child.wait()
        seconds = time.perf_counter() - started
    if child.returncode != 0:
        raise SystemExit(f"shiwu predict failed ({child.returncode}):\n" + "\n".join(l for _, l in lines))
    answer = json.loads(out)
    return {"seconds": seconds, "lines": lines, "setting": f"{answer['backend']} {answer['precision']}",
            "top1": answer["predictions"][0]["label"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--src", action="append", default=[], metavar="NAME=PATH",
                        help="a shiwu source folder to run (PYTHONPATH); default: the installed one")
    parser.add_argument("--photo", type=Path, default=ROOT / "tests" / "data" / "chelsea.jpg")
    parser.add_argument("--choice-only", action="store_true",
                        help="one warm cache; only the --backend auto choice is made again each run")
    args = parser.parse_args()
    warm_folder = tempfile.TemporaryDirectory(prefix="shiwu-warm-") if args.choice_only else None
    warm = Path(warm_folder.name) if warm_folder else None
    versions = dict(s.split("=", 1) for s in args.src) or {"this checkout": str(ROOT / "src")}
    runs: dict[str, list[dict]] = {name: [] for name in versions}
    if warm is not None:  # the exports, int8 models and verdicts, made once before the rounds
        one_run(next(iter(versions.values())), args.photo, warm)
    for round_ in range(args.rounds):
        for name, src in versions.items():  # interleaved: A B, A B, ...
            run = one_run(src, args.photo, warm)
            runs[name].append(run)
            print(f"round {round_ + 1} {name}: {run['seconds']:.1f} s, {run['setting']}", file=sys.stderr)
    first = next(iter(versions))
    base = statistics.median(r["seconds"] for r in runs[first])
    rows = []
    for name, done in runs.items():
        median = statistics.median(r["seconds"] for r in done)
        rows.append([name, f"{median:.1f}", " ".join(f"{r['seconds']:.1f}" for r in done),
                     speedup(base, median) if name != first else "1.00x",
                     ", ".join(sorted({r["setting"] for r in done})), ", ".join(sorted({r["top1"] for r in done}))])
    what = ("only the --backend auto choice made again (a warm cache)" if warm else "an empty cache")
    print(f"First `shiwu predict {args.photo.name}` with {what}, {args.rounds} interleaved rounds:")
    print_table(["version", "median s", "runs s", "faster than " + first, "setting chosen", "top-1"], rows)
    for name, done in runs.items():
        print(f"{name}: chosen " + ", ".join(f"{s} {n}x" for s, n in sorted(
            {r["setting"]: sum(x["setting"] == r["setting"] for x in done) for r in done}.items())))
    for name, done in runs.items():
        median_run = sorted(done, key=lambda r: r["seconds"])[len(done) // 2]
        print(f"\nWhere the seconds went ({name}, the median run; seconds since start, then the step's log line):")
        previous = 0.0
        for stamp, line in median_run["lines"]:
            print(f"{stamp:7.1f} (+{stamp - previous:5.1f})  {line[:150]}")
            previous = stamp
        print(f"{median_run['seconds']:7.1f} (+{median_run['seconds'] - previous:5.1f})  answered")
    if warm_folder is not None:
        warm_folder.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(record_run("first_run_choice" if "--choice-only" in sys.argv else "first_run", main))
