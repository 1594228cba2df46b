"""Issue 20 items 6 and 13 in shiwu.gallery: class names are portable folder names, and a first
write cut by kill -9 (a class folder holding only a `.tmp-` file) neither stops `predict
--gallery` nor lingers."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support.gallery import make_gallery

from shiwu.gallery import GalleryError, check_label, class_folder, class_folders

SHIWU = str(Path(sys.executable).parent / "shiwu")


@pytest.mark.parametrize("label", ["𠀀" * 64, "CON", "nul", "com1", "COM9", "aux.txt", "Lpt1.tar.gz",
                                   "trail.", "com¹"])
def test_labels_that_are_no_portable_folder_name_are_refused(label):
    with pytest.raises(GalleryError):
        check_label(label)


@pytest.mark.parametrize("label", ["猫", "𠀀" * 63, "console", "nully", "com10", "a.b", "快递柜 2"])
def test_ordinary_labels_are_kept(label):
    assert check_label(label) == label


def test_a_label_that_is_a_file_in_the_gallery_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(GalleryError, match="is a file"):
        class_folder(tmp_path, "notes.txt")


def test_a_class_holding_only_a_cut_off_write_is_skipped_and_old_strays_removed(tmp_path):
    from shiwu.gallery import remove_strays

    folder = make_gallery(tmp_path / "g", {"猫": "chelsea.jpg"}, count=1)
    (folder / "半截").mkdir()
    fresh = folder / "半截" / ".tmp-abc123-0123456789abcdef01234567.jpg"
    fresh.write_bytes(b"\xff\xd8\xff")
    assert list(class_folders(folder)) == ["猫"]
    run = subprocess.run([SHIWU, "predict", str(Path(__file__).parents[1] / "data" / "chelsea.jpg"),
                          "--gallery", str(folder), "--backend", "onnxruntime", "--threads", "1"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "半截" in run.stderr  # said, not silently ignored
    assert remove_strays(folder, older_than=60) == [] and fresh.exists()  # a live writer's, maybe
    os.utime(fresh, (time.time() - 3600, time.time() - 3600))
    assert remove_strays(folder, older_than=60) == [fresh]
    assert not (folder / "半截").exists() and (folder / "猫").is_dir()
