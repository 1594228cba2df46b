"""`shiwu export` writing its files. Before, a disk that filled ended in an OSError traceback
(exit 1) from shutil.copyfile, after truncating the earlier good m.onnx to a file that still
looked valid; and exporting a second model into a folder silently re-pointed its shiwu.json.
Now every file is written whole or not at all: one line, exit 3, the earlier export unchanged;
a folder holding another export's shiwu.json is a usage error before any work."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from support import mounts

SHIWU = str(Path(sys.executable).parent / "shiwu")
SUFFIX = {"onnx": ".onnx", "openvino": ".xml", "torchscript": ".pt"}


def shiwu(*args) -> subprocess.CompletedProcess:
    return subprocess.run([SHIWU, *map(str, args)], capture_output=True, text=True, timeout=600)


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture
def small_disk(tmp_path):
    """22 MB: an export of EfficientNet-Lite0 (~19 MB) fits; one of Lite2 (~24 MB) does not, even
    in the space of the Lite0 files it replaces."""
    with mounts.small_disk(tmp_path / "small", "22m") as folder:
        yield folder


@pytest.mark.parametrize("fmt", ["onnx", "openvino", "torchscript"])
def test_export_to_a_full_disk_keeps_the_earlier_export_and_says_one_line(small_disk, fmt):
    out = small_disk / f"m{SUFFIX[fmt]}"
    first = shiwu("export", "-f", fmt, "-o", out, "-q")
    assert first.returncode == 0, first.stderr
    before = digests(small_disk)
    # the same output, now of the larger model: allowed, but there is no room
    again = shiwu("export", "-f", fmt, "-o", out, "--model", "efficientnet-lite2", "-q")
    assert again.returncode == 3, again.stderr[-3000:]
    lines = again.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"shiwu: error: cannot write {out}: no space left"), lines
    assert digests(small_disk) == before  # nothing truncated, no temporary file or folder left


def test_a_folder_holding_another_exports_settings_is_refused_before_any_work(tmp_path):
    folder = tmp_path / "deploy"
    assert shiwu("export", "-f", "onnx", "-o", folder / "a.onnx", "-q").returncode == 0
    before = digests(folder)
    other = shiwu("export", "-f", "onnx", "-o", folder / "b.onnx", "-q")
    assert other.returncode == 2, other.stderr
    lines = other.stderr.splitlines()
    assert len(lines) == 1 and "already holds another export's shiwu.json" in lines[0], lines
    assert "choose another folder" in lines[0]
    assert digests(folder) == before  # shiwu.json still runs a.onnx; no b.onnx
    # the same output exported again is no conflict
    assert shiwu("export", "-f", "onnx", "-o", folder / "a.onnx", "-q").returncode == 0
