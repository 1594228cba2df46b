"""The served index of the duplicates tests: real photos from tests/data with an exact copy, a
grayscale copy and 90% crops, indexed by `shiwu index`, served by `shiwu serve --index --api-key`
(fixtures shared by test_server_duplicates.py and test_web_duplicates.py)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageOps

from shiwu.server.process import ServerProcess

from .photos import DATA

SHIWU = str(Path(sys.executable).parent / "shiwu")
KEY = "dupes-key-3"
AUTH = {"X-API-Key": KEY}
FAST = ["--backend", "onnxruntime", "--threads", "1"]
SERVE = [*FAST, "--max-batch-size", "4", "--warmup-seconds", "0", "--no-access-log"]


def _crop(name: str, folder: Path) -> None:
    """A 90% crop: 10-14 bits of pHash from its photo (not `near`), 0.91-0.94 alike in Lite0."""
    photo = Image.open(DATA / f"{name}.jpg").convert("RGB")
    w, h = photo.size
    photo.crop((w // 20, h // 20, w - w // 20, h - h // 20)).save(folder / f"{name}_crop.jpg", quality=90)


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    folder = tmp_path_factory.mktemp("library")
    for name in ("coffee", "chelsea", "rocket", "astronaut", "camera"):
        shutil.copy(DATA / f"{name}.jpg", folder / f"{name}.jpg")
    shutil.copy(DATA / "coffee.jpg", folder / "coffee copy.jpg")  # the same bytes
    ImageOps.grayscale(Image.open(DATA / "chelsea.jpg")).save(folder / "chelsea_gray.jpg", quality=90)
    _crop("rocket", folder)
    _crop("astronaut", folder)
    return folder


@pytest.fixture(scope="module")
def dupes_index(library, tmp_path_factory):
    out = tmp_path_factory.mktemp("index") / "索引"
    run = subprocess.run([SHIWU, "index", str(library), "--out", str(out), *FAST, "-q"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    return out


@pytest.fixture(scope="module")
def dupes_server(dupes_index):
    with ServerProcess([*SERVE, "--index", str(dupes_index), "--api-key", KEY]) as process:
        yield process
