"""Shared by the tests/index/test_index*.py files: photos-on-disk stand-ins and their vectors,
and `shiwu` run as a subprocess with quick settings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from shiwu.index import IndexRow

SHIWU = str(Path(sys.executable).parent / "shiwu")
FAST = ["--backend", "onnxruntime", "--threads", "1", "-q"]


def shiwu(*args, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([SHIWU, *map(str, args)], capture_output=True, text=True, encoding="utf-8",
                          timeout=timeout)


def unit(vectors) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)


def random_vectors(count: int, dimension: int, seed: int = 0) -> np.ndarray:
    return unit(np.random.default_rng(seed).standard_normal((count, dimension)))


def clustered(centres: int, per_centre: int, dimension: int, noise: float, seed: int = 0):
    """(vectors, cluster of each): tight groups around random directions."""
    rng = np.random.default_rng(seed)
    middle = unit(rng.standard_normal((centres, dimension)))
    cluster = np.repeat(np.arange(centres), per_centre)
    points = middle[cluster] + noise * rng.standard_normal((len(cluster), dimension)) / np.sqrt(dimension)
    return unit(points), cluster


def make_files(folder: Path, count: int, prefix: str = "photo") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"{prefix}{i:04d}.jpg"
        path.write_bytes(b"\xff\xd8" + bytes(i % 251 for _ in range(100 + i)))  # distinct sizes
        paths.append(path)
    return paths


def rows_for(paths, model: str = "test-model", label: str = "虎斑猫") -> list[IndexRow]:
    return [IndexRow.for_file(p, model=model, label=label, score=0.5) for p in paths]
