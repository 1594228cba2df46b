"""`shiwu predict 照片.jpg` as a user types it: a fresh process each time, wall time to the answer.

What one command costs beyond the photo itself: starting Python, importing, opening the model
(its cache warm: the first run of all, which exports, quantizes and measures once, is not what
this times), one prediction, printing. Each setting runs as the real command; rounds are
interleaved across settings (and across code trees, with ``--against``), medians reported.

``--against DIR``: another checkout of shiwu (its ``src`` goes first on PYTHONPATH), measured in
the same rounds, for a before/after of a start-up change:

    git worktree add /tmp/shiwu-before <commit>
    python benchmarks/speed/cold_start.py --against /tmp/shiwu-before [--rounds 15]
``--read-only-cache``: the timed runs see the (warmed) cache folder read-only, as a container with
a read-only root file system does (a read-only bind mount in a private mount namespace: root only).
Recorded as cold_start_read_only.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared helper
from bench_common import PHOTOS, ROOT, load_note, print_table, record_run, speedup  # noqa: E402

SETTINGS = {
    "default": [],  # what a command with no flags runs: --backend auto --precision auto
    "onnxruntime fp32": ["--backend", "onnxruntime", "--precision", "fp32"],
    "openvino fp32": ["--backend", "openvino", "--precision", "fp32"],
}


def read_only(folder: Path) -> list[str]:
    """A command prefix that runs the command with ``folder`` mounted read-only."""
    if os.geteuid() != 0:
        sys.exit("--read-only-cache needs root (a read-only bind mount in a private mount namespace)")
    return ["unshare", "-m", "sh", "-c", f"mount --bind -o ro '{folder}' '{folder}' && exec \"$@\"", "sh"]


def command_seconds(tree: Path, extra: list[str], photo: Path, wrap: list[str] = ()) -> float:
    env = dict(os.environ, PYTHONPATH=str(tree / "src"))
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # as installed: compiled modules are reused
    start = time.perf_counter()
    subprocess.run([*wrap, sys.executable, "-m", "shiwu", "predict", str(photo), "-q", *extra], env=env,
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL if wrap else None,
                   timeout=600)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photo", type=Path, default=PHOTOS / "chelsea.jpg")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--against", type=Path, default=None, help="another shiwu checkout to compare with")
    parser.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated names of: "
                        + ", ".join(SETTINGS))
    parser.add_argument("--read-only-cache", action="store_true",
                        help="time the runs with the warmed cache folder mounted read-only")
    args = parser.parse_args()
    from shiwu.cache import configured_dir

    wrap = read_only(configured_dir()) if args.read_only_cache else []
    trees = {"this tree": ROOT} | ({f"{args.against.name}": args.against} if args.against else {})
    rows = [(tree_name, tree, name, SETTINGS[name]) for name in args.settings.split(",")
            for tree_name, tree in trees.items()]
    for _, tree, _, extra in rows:  # warm: the cache entries, the compiled modules, the OS's file cache
        command_seconds(tree, extra, args.photo)
    seconds: dict[int, list[float]] = {i: [] for i in range(len(rows))}
    for round_ in range(args.rounds):
        for i in sorted(seconds, key=lambda i: (i + round_) % len(rows)):
            seconds[i].append(command_seconds(rows[i][1], rows[i][3], args.photo, wrap))
    where = f", read-only ({configured_dir()})" if wrap else ""
    print(f"`shiwu predict {args.photo.name}`, a fresh process each time, cache warm{where}; "
          f"{args.rounds} interleaved rounds, medians{load_note()}\n")
    table = []
    for i, (tree_name, _, name, _) in enumerate(rows):
        this = statistics.median(seconds[next(j for j, r in enumerate(rows) if r[2] == name)])
        median = statistics.median(seconds[i])
        table.append([name, tree_name, f"{median:.2f}", f"{min(seconds[i]):.2f}",
                      "–" if tree_name == "this tree" else speedup(median, this)])
    print_table(["setting", "code", "median s", "best s", "this tree faster by"], table)
    return 0


if __name__ == "__main__":
    sys.exit(record_run("cold_start_read_only" if "--read-only-cache" in sys.argv else "cold_start", main))
