"""Hand-damaged or hostile index folders: one line and exit 2, never a traceback, an abort or a
hang; what killed writers leave behind is cleaned; files get the permissions of the table."""

import json
import os
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support.index_helpers import make_files, random_vectors, rows_for

from shiwu.fsutil import TEMP_PREFIX
from shiwu.index import IndexFormatError, Manifest, create_index, open_index

SHIWU = str(Path(sys.executable).parent / "shiwu")
DIM = 8


def shiwu(*args, timeout=120):
    return subprocess.run([SHIWU, *map(str, args)], capture_output=True, text=True, encoding="utf-8",
                          timeout=timeout)


@pytest.fixture
def index(tmp_path):
    location = tmp_path / "index"
    paths = make_files(tmp_path / "photos", 6)
    with create_index(location, Manifest(model="test-model", dimension=DIM)) as made:
        made.upsert(rows_for(paths), random_vectors(6, DIM))
    return location


def _edit_manifest(location: Path, change) -> None:
    path = location / "manifest.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(json.dumps(data), encoding="utf-8")


def _refused_in_one_line(location: Path, *words: str) -> None:
    """`shiwu dedupe --index` (reads the manifest, the table and builds faiss) says one line."""
    run = shiwu("dedupe", "--index", location, "--json")
    assert run.returncode == 2, (run.returncode, run.stderr)
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("shiwu: error:"), run.stderr
    for word in words:
        assert word in lines[0], lines[0]
    with pytest.raises(IndexFormatError):
        open_index(location).close()


@pytest.mark.parametrize("changes, word", [
    ({"kind": "annoy"}, "engine"),
    ({"kind": 7}, "engine"),
    ({"kind": "hnsw", "hnsw_m": 0}, "hnsw_m"),  # faiss aborts the process (rc -6) on HNSW M=0
    ({"nprobe": "32"}, "nprobe"),
    ({"engine": "qdrant"}, "engine"),
])
def test_a_damaged_engine_is_refused(index, changes, word):
    _edit_manifest(index, lambda data: data["engine"].update(changes))
    _refused_in_one_line(index, word)


@pytest.mark.parametrize("change, word", [
    (lambda data: data.update(dimension="8"), "dimension"),
    (lambda data: data.update(dimension=0), "dimension"),
    (lambda data: data.update(engine=[1, 2]), "engine"),
    (lambda data: data.update(model_ref={"name": 5}), "model_ref"),
    (lambda data: data.update(counts="many"), "counts"),
])
def test_a_manifest_with_wrong_types_is_refused(index, change, word):
    _edit_manifest(index, change)
    _refused_in_one_line(index, word)


def test_a_manifest_that_is_a_folder_is_refused(index):
    (index / "manifest.json").unlink()
    (index / "manifest.json").mkdir()
    _refused_in_one_line(index, "not a regular file")


@pytest.mark.parametrize("key, value", [("generation", "lots"), ("identity", "{not json")])
def test_a_damaged_table_record_is_refused(index, key, value):
    db = sqlite3.connect(index / "images.sqlite")
    db.execute("UPDATE meta SET value = ? WHERE key = ?", (value, key))
    db.commit()
    db.close()
    _refused_in_one_line(index, key)


def test_a_manifest_linked_to_dev_zero_or_a_fifo_does_not_hang(index):
    manifest = index / "manifest.json"
    manifest.unlink()
    manifest.symlink_to("/dev/zero")
    started = time.monotonic()
    _refused_in_one_line(index, "not a regular file")
    manifest.unlink()
    os.mkfifo(manifest)
    _refused_in_one_line(index, "not a regular file")
    assert time.monotonic() - started < 60


def test_a_huge_manifest_is_not_read_whole(index):
    _edit_manifest(index, lambda data: data.update(padding="x" * (2 << 20)))
    _refused_in_one_line(index, "over")


def test_index_files_get_the_permissions_of_the_table(index):
    mode = {name: stat.S_IMODE(os.stat(index / name).st_mode)
            for name in ("manifest.json", "vectors.faiss", "images.sqlite")}
    assert mode["manifest.json"] == mode["vectors.faiss"] == mode["images.sqlite"], mode


def test_temporary_files_of_killed_writers_are_cleaned(index):
    old = index / f"{TEMP_PREFIX}abc-vectors.faiss"
    old.write_bytes(b"half a faiss file")
    hour_ago = time.time() - 7200
    os.utime(old, (hour_ago, hour_ago))
    fresh = index / f"{TEMP_PREFIX}def-manifest.json"  # maybe a live writer's: left alone
    fresh.write_bytes(b"{")
    open_index(index).close()
    assert not old.exists() and fresh.exists()


@pytest.mark.parametrize("threshold", ["nan", "1.5", "-0.1", "inf"])
def test_a_threshold_that_is_not_a_similarity_is_a_usage_error(index, threshold):
    run = shiwu("dedupe", "--index", index, "--threshold", threshold)
    assert run.returncode == 2 and "threshold" in run.stderr and "Traceback" not in run.stderr
    assert "groups of near-duplicates" not in run.stderr
