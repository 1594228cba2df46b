"""What the `shiwu batch` tests share: small photos to batch, result files read back, and the
`shiwu` command run as a user runs it (a real subprocess, with or without a local Ray)."""

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
from PIL import Image

from support.photos import PHOTOS

SHIWU = str(Path(sys.executable).parent / "shiwu")
FAST = ["--backend", "torch", "--threads", "1", "-q"]  # torch ships with shiwu: no export step
RAY_ENV = {"SHIWU_RAY_NUM_CPUS": "2", "RAY_USAGE_STATS_ENABLED": "0"}


def small_photos(folder, count):
    """``count`` small JPEGs made from the test photos (different sizes, so no two are equal)."""
    folder.mkdir(parents=True, exist_ok=True)
    sources = [Image.open(p).convert("RGB") for p in PHOTOS[:4]]
    paths = []
    for i in range(count):
        image = sources[i % len(sources)].resize((160 + i % 7 * 8, 120 + i % 5 * 8))
        path = folder / f"img_{i:03d}.jpg"
        image.save(path, quality=85)
        paths.append(path)
    return paths


def read_back(out):
    """A result file's rows as dicts (flat columns for CSV and Parquet)."""
    import csv

    if out.suffix == ".jsonl":
        return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    if out.suffix == ".csv":
        with open(out, encoding="utf-8-sig", newline="") as handle:
            return list(csv.DictReader(handle))
    return pq.read_table(out).to_pylist()


def shiwu(*args, env=None, timeout=300):
    return subprocess.run([SHIWU, *map(str, args)], capture_output=True, text=True,
                          encoding="utf-8", timeout=timeout, env=env)


def written_rows(out: Path) -> int:
    """Complete rows on disk right now, while a run is writing (the journal for Parquet)."""
    target = out.with_name(out.name + ".partial.jsonl") if out.suffix == ".parquet" else out
    try:
        lines = target.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0
    return lines - 1 if out.suffix == ".csv" else lines


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"
