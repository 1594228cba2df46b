"""A cache entry proves what it is (issue 20, item 4): a valid ONNX file of another model in a
cache slot is not used (it gave the other model's answers, silently); the entry is built again
with one warning. And the temporary files of killed writers are cleaned (item 14)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image
from support.tiny_models import red_and_blue
import pytest

SHIWU = str(Path(sys.executable).parent / "shiwu")


def predict(model: Path, photo: Path, cache: Path) -> tuple[str, str]:
    done = subprocess.run([SHIWU, "predict", "--model", str(model), str(photo), "--json", "-b", "onnxruntime"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "SHIWU_CACHE": str(cache)})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["predictions"][0]["label"], done.stderr


def the_slot(cache: Path) -> Path:
    (slot,) = (cache / "onnx").glob("*.onnx")
    return slot


@pytest.mark.slow
def test_a_valid_onnx_of_another_model_in_the_slot_is_rebuilt_with_one_warning(tmp_path):
    red = red_and_blue(tmp_path / "red" / "model.onnx", red_first=True)
    blue = red_and_blue(tmp_path / "blue" / "model.onnx", red_first=False)
    photo = tmp_path / "red.png"
    Image.new("RGB", (64, 64), (250, 10, 10)).save(photo)
    cache, other = tmp_path / "cache", tmp_path / "other-cache"
    assert predict(red, photo, cache)[0] == "红"
    assert predict(blue, photo, other)[0] == "蓝"

    shutil.copyfile(the_slot(other), the_slot(cache))  # same shape, another model's weights
    label, err = predict(red, photo, cache)
    assert label == "红"
    assert err.count("warning:") == 1 and "building it again" in err
    label, err = predict(red, photo, cache)  # rebuilt: trusted again, quietly
    assert label == "红" and "warning" not in err


@pytest.mark.slow
def test_an_entry_without_its_record_or_changed_in_place_is_rebuilt(tmp_path):
    red = red_and_blue(tmp_path / "red" / "model.onnx", red_first=True)
    photo = tmp_path / "red.png"
    Image.new("RGB", (64, 64), (250, 10, 10)).save(photo)
    cache = tmp_path / "cache"
    predict(red, photo, cache)
    slot = the_slot(cache)
    slot.with_name(slot.name + ".record.json").unlink()
    label, err = predict(red, photo, cache)
    assert label == "红" and "has no record" in err
    # same size, other bytes, written in place (same inode): the content hash tells
    blue = red_and_blue(tmp_path / "blue" / "model.onnx", red_first=False)
    predict(blue, photo, tmp_path / "other")
    with open(slot, "r+b") as f:
        f.write(the_slot(tmp_path / "other").read_bytes())
    label, err = predict(red, photo, cache)
    assert label == "红" and "changed since it was written" in err


@pytest.mark.slow
def test_stray_temporary_files_of_killed_writers_are_cleaned(tmp_path):
    red = red_and_blue(tmp_path / "red" / "model.onnx", red_first=True)
    photo = tmp_path / "red.png"
    Image.new("RGB", (64, 64), (250, 10, 10)).save(photo)
    cache = tmp_path / "cache"
    predict(red, photo, cache)
    old = cache / "onnx" / ".tmp-abc123-model.onnx"
    fresh = cache / "onnx" / ".tmp-def456-model.onnx"  # maybe another process writing right now
    for stray in (old, fresh):
        stray.write_bytes(b"half an export")
    hours_ago = time.time() - 2 * 3600
    os.utime(old, (hours_ago, hours_ago))
    assert predict(red, photo, cache)[0] == "红"
    assert not old.exists()
    assert fresh.exists()
