"""A cache on a full disk (a 1 MB tmpfs; the ONNX and TorchScript graphs are ~18 MB). Before,
the default backend's TorchScript export threw a C++ error nothing caught: the process aborted
(exit 134, "terminate called after throwing an instance of 'c10::Error'" and ~50 frames) and left
its `.tmp-*.pt` in the cache, keeping it full; `--backend onnxruntime` said to use --backend torch.
Now an export that finds no room is skipped by `--backend auto` (torch needs no export), and
when nothing can run, one line names the cache folder and SHIWU_CACHE, exit 3."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from support.mounts import small_disk
from support.photos import DATA

SHIWU = str(Path(sys.executable).parent / "shiwu")


@pytest.fixture
def full_cache(tmp_path):
    with small_disk(tmp_path / "tinyc", "1m") as folder:
        yield folder


def shiwu(*args, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "SHIWU_CACHE": str(cache)}
    env.pop("SHIWU_PRECISION", None)  # the defaults, as a user has them
    return subprocess.run([SHIWU, *map(str, args)], capture_output=True, text=True, timeout=600, env=env)


def temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.startswith(".tmp-")]


def test_the_default_backend_goes_on_without_the_exports_a_full_cache_cannot_hold(full_cache, tmp_path):
    out = tmp_path / "rows.jsonl"
    done = shiwu("batch", DATA, "-o", out, "-v", cache=full_cache)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "terminate called" not in done.stderr and "Traceback" not in done.stderr
    assert f"the cache folder {full_cache} has no room" in done.stderr, done.stderr  # each skip says why
    rows = out.read_text(encoding="utf-8").splitlines()
    assert rows and all('"backend": "torch"' in row for row in rows)
    assert temporaries(full_cache) == []  # nothing left to keep the cache full
    # the choice made without the exports is not remembered: a later run with room measures again
    assert not any((full_cache / "auto").glob("*.json"))


@pytest.mark.parametrize("backend", [["--backend", "onnxruntime"], ["--backend", "onnxruntime", "--precision", "fp32"],
                                     ["--backend", "torchscript"], ["--backend", "openvino", "--precision", "fp32"]])
def test_nothing_runs_on_a_full_cache_one_line_names_the_folder(full_cache, backend):
    done = shiwu("predict", DATA / "coffee.jpg", *backend, "-q", cache=full_cache)
    assert done.returncode == 3, done.stderr[-3000:]
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"shiwu: error: the cache folder {full_cache} has no room"), lines
    assert "SHIWU_CACHE" in lines[0] and "--backend torch" not in lines[0]
    assert temporaries(full_cache) == []
