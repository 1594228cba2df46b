"""`shiwu index` against `shiwu batch` on the same photos: what storing embeddings costs.

Both commands run as a user runs them (fresh processes, the same backend, decoders and batch
size); rounds alternate batch, index, batch, index... so that a busy moment of this shared
machine hits both. Photos: distinct 640x480 JPEGs cut from the bundled photos (distinct files,
so no decoder sees the same stream twice). The goal: index >= 90% of batch's images/s.

    python benchmarks/speed/index_throughput.py [--photos 400] [--rounds 3] [--backend onnxruntime]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from shiwu.calibrate import bundled_photos
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared helper
from bench_common import load_note, print_table, record_run  # noqa: E402

SHIWU = str(Path(sys.executable).parent / "shiwu")


def make_photos(folder: Path, count: int) -> None:
    rng = np.random.default_rng(0)
    sources = [Image.open(p).convert("RGB") for p in bundled_photos()]
    for i in range(count):
        image = sources[i % len(sources)]
        scale = rng.uniform(1.0, 1.6)
        big = image.resize((int(640 * scale), int(480 * scale)))
        left, top = rng.integers(0, big.width - 640 + 1), rng.integers(0, big.height - 480 + 1)
        big.crop((left, top, left + 640, top + 480)).save(folder / f"{i:05d}.jpg", quality=90)


def run(command: list[str]) -> float:
    """Images per second of one run, as its own summary says (start-up excluded: both commands
    load the same model, and the summaries time the work)."""
    done = subprocess.run([SHIWU, *command, "--json", "-q"], capture_output=True, text=True, check=True)
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    return summary["images_per_second"] if "images_per_second" in summary else summary["done"] / summary["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backend", default="onnxruntime")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="shiwu-index-bench-"))
    try:
        photos = work / "photos"
        photos.mkdir()
        make_photos(photos, args.photos)
        common = ["--backend", args.backend]
        subprocess.run([SHIWU, "predict", str(next(photos.iterdir())), *common], capture_output=True)  # export once
        batch, index = [], []
        for round_ in range(args.rounds):
            out = work / f"rows-{round_}.jsonl"
            batch.append(run(["batch", str(photos), "--out", str(out), *common]))
            index.append(run(["index", str(photos), "--out", str(work / f"index-{round_}"), *common]))
        print(f"{args.photos} distinct 640x480 JPEGs, {args.rounds} interleaved rounds, {args.backend}{load_note()}\n")
        base = statistics.median(batch)
        print_table(["command", "images/s per round", "median", "vs batch"],
                    [[name, ", ".join(f"{v:.1f}" for v in values), f"{statistics.median(values):.1f}",
                      f"{statistics.median(values) / base:.0%}"]
                     for name, values in (("shiwu batch --out rows.jsonl", batch), ("shiwu index --out INDEX", index))])
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(record_run("index_throughput", main))
