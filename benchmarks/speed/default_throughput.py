"""A folder of real photos through `shiwu batch`: the default (what a command with no flags
runs: --backend auto --precision auto) against fp32 settings, with the top-1 of each run.

Each setting is the real command in its own process over the same labelled photos
(../shared/imagenet-dev, read in place, never copied); rounds are interleaved across the
settings and the median of each setting's photos/s is reported, so a busy moment of the machine
falls on every setting alike. Accuracy comes from the rows each run wrote: the speed and the
accuracy in the table are of the same runs.

Goal (issue 22): the default's throughput >= 1.5x the earlier fp32 default (openvino fp32) with
a top-1 >= 99% of fp32's.

    python benchmarks/speed/default_throughput.py [--photos DIR] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared helper
from bench_common import ROOT, print_table, record_run, speedup  # noqa: E402

SHIWU = Path(sys.executable).parent / "shiwu"
SETTINGS = {
    "openvino fp32 (the earlier default)": ["--backend", "openvino", "--precision", "fp32"],
    "onnxruntime fp32": ["--backend", "onnxruntime", "--precision", "fp32"],
    "default (auto, auto)": [],
}


def find_photos(given: str | None) -> Path:
    if given:
        return Path(given)
    for parent in ROOT.parents:
        if (parent / "shared" / "imagenet-dev").is_dir():
            return parent / "shared" / "imagenet-dev"
    raise SystemExit("no labelled photos: give --photos DIR (one file per photo, named <synset>_...)")


def synsets(folder: Path) -> dict[str, int]:
    """synset -> ImageNet-1k index, from the folder's classes.tsv."""
    out = {}
    for line in (folder / "classes.tsv").read_text(encoding="utf-8").splitlines():
        index, synset, *_ = line.split("\t")
        out[synset] = int(index)
    return out


def one_run(photos: Path, flags: list[str], classes: dict[str, int]) -> tuple[float, float, str]:
    """(photos/s, top-1, backend+precision named in the rows) of one `shiwu batch` run."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "rows.jsonl"
        start = time.perf_counter()
        subprocess.run([str(SHIWU), "batch", str(photos), "-o", str(out), "-q", *flags],
                       check=True, capture_output=True, text=True, env={**os.environ})
        seconds = time.perf_counter() - start
        rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    good = [r for r in rows if r["predictions"]]
    right = sum(r["predictions"][0]["index"] == classes[Path(r["image"]).name.split("_")[0]] for r in good)
    return len(rows) / seconds, right / len(rows), f"{rows[0]['backend']} {rows[0]['precision']}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", default=None, help="labelled photos (default: ../shared/imagenet-dev)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    photos = find_photos(args.photos)
    classes = synsets(photos)
    for flags in SETTINGS.values():  # exports, int8 models and auto's choice: made before timing
        one_run(photos, flags, classes)
    rates: dict[str, list[float]] = {name: [] for name in SETTINGS}
    facts: dict[str, tuple[float, str]] = {}
    for _ in range(args.rounds):
        for name, flags in SETTINGS.items():
            rate, top1, ran = one_run(photos, flags, classes)
            rates[name].append(rate)
            facts[name] = (top1, ran)
    base_name = next(iter(SETTINGS))
    base = statistics.median(rates[base_name])
    fp32_top1 = facts[base_name][0]
    print(f"{len(list(photos.glob('*.JPEG')))} labelled photos, `shiwu batch` end to end (decode included), "
          f"{args.rounds} interleaved rounds, median photos/s\n")
    print_table(["setting", "ran as", "photos/s", "vs earlier default", "top-1", "top-1 vs fp32"],
                [[name, facts[name][1], f"{statistics.median(rates[name]):.1f}",
                  speedup(1 / base, 1 / statistics.median(rates[name])), f"{facts[name][0]:.1%}",
                  f"{facts[name][0] / fp32_top1:.1%}"] for name in SETTINGS])


if __name__ == "__main__":
    sys.exit(record_run("default_throughput", main))
