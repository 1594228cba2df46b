"""`shiwu dedupe` with file names that are not UTF-8 (GBK bytes from a zip made on Chinese
Windows) and with files that cannot be read. A row keeps such a name as a file:// URI (its
identity, shiwu.filenames); the tiers once read the file by that text, found nothing, and left a
byte-identical copy out of the exact and near tiers without a word. Now every copy is grouped,
named in the readable form, and a file that truly cannot be read is named, never dropped."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support.index_helpers import random_vectors, rows_for
from support.photos import DATA
from shiwu.index import Manifest, create_index

SHIWU = str(Path(sys.executable).parent / "shiwu")
GBK = os.fsdecode("测试".encode("gbk") + b".jpg")  # b'\xb2\xe2\xca\xd4.jpg': not UTF-8
GBK_READABLE = "\\xb2\\xe2\\xca\\xd4.jpg"    # docs/en/names-and-identity.md: what people see
# strict UTF-8 stdout, as on a user's terminal (the C locale would hide an unencodable name)
UTF8 = {"LC_ALL": "C.UTF-8", "PYTHONIOENCODING": "utf-8"}


def dedupe(*args) -> subprocess.CompletedProcess:
    # --tier exact / near load no model: a real `shiwu` process is cheap
    return subprocess.run([SHIWU, "dedupe", *map(str, args)], capture_output=True, text=True,
                          encoding="utf-8", errors="replace", timeout=300, env={**os.environ, **UTF8})


def _copies(folder: Path, *names: str) -> list[Path]:
    """Byte-identical copies of astronaut.jpg (names relative to ``folder``, may be GBK)."""
    paths = []
    for name in names:
        path = Path(os.path.join(os.fspath(folder), name))
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(DATA / "astronaut.jpg", path)
        paths.append(path)
    return paths


def test_exact_tier_groups_a_byte_copy_whose_name_is_not_utf8(tmp_path):
    _copies(tmp_path / "ex", "a.jpg", "b.jpg", GBK)
    shutil.copy(DATA / "camera.jpg", tmp_path / "ex" / "camera.jpg")  # no copy of it: no group
    run = dedupe(tmp_path / "ex", "--tier", "exact", "--json")
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr
    answer = json.loads(run.stdout)
    (group,) = answer["groups"]
    # equal sizes: by path, and "\" sorts before "a"
    assert [Path(p).name for p in group] == [GBK_READABLE, "a.jpg", "b.jpg"]
    assert group[0] == str(tmp_path / "ex" / GBK_READABLE)  # the readable form, as the user spelled the folder
    assert answer["tiers"] == ["exact"] and answer["matches"] == [[None, "exact", "exact"]]
    assert answer["unread"] == [] and "left out" not in run.stderr
    text = dedupe(tmp_path / "ex", "--tier", "exact")
    assert text.returncode == 0 and text.stdout.splitlines() == [
        f"group 1 (exact): {tmp_path / 'ex' / GBK_READABLE}",
        f"  exact: {tmp_path / 'ex' / 'a.jpg'}", f"  exact: {tmp_path / 'ex' / 'b.jpg'}"], text.stderr


def test_copies_in_a_utf8_and_a_gbk_folder_are_exact_in_the_near_tier(tmp_path):
    # the user's second case: before, only the embeddings tied them ("similar"), or nothing did
    _copies(tmp_path, "good/照片.jpg", os.fsdecode("照片".encode("gbk")) + "/" + GBK)
    run = dedupe(tmp_path / "good", tmp_path / os.fsdecode("照片".encode("gbk")), "--tier", "near", "--json")
    assert run.returncode == 0, run.stderr
    answer = json.loads(run.stdout)
    assert answer["tiers"] == ["exact"] and answer["matches"] == [[None, "exact"]]
    assert sorted(Path(p).name for p in answer["groups"][0]) == sorted([GBK_READABLE, "照片.jpg"])


def test_an_index_finds_the_copy_by_its_stored_identity(tmp_path):
    # `dedupe --index` reads rows back from SQLite: the real path is the file:// URI there
    paths = _copies(tmp_path / "photos", "a.jpg", GBK)
    with create_index(tmp_path / "index", Manifest(model="m", dimension=8)) as index:
        index.upsert(rows_for(paths), random_vectors(len(paths), 8, seed=5))
        (stored,) = [row.real_path for row in index.all_rows() if row.real_path.startswith("file://")]
        assert stored.endswith("/%B2%E2%CA%D4.jpg")
    run = dedupe("--index", tmp_path / "index", "--tier", "near", "--json")
    assert run.returncode == 0, run.stderr
    answer = json.loads(run.stdout)
    assert [sorted(Path(p).name for p in g) for g in answer["groups"]] == [[GBK_READABLE, "a.jpg"]]
    assert answer["tiers"] == ["exact"] and answer["unread"] == []


@pytest.mark.parametrize("tier", ["exact", "near"])
def test_a_file_that_cannot_be_read_is_named_not_dropped(tmp_path, tier):
    _copies(tmp_path / "ex", "a.jpg", GBK)
    broken = os.path.join(os.fspath(tmp_path / "ex"), os.fsdecode("坏".encode("gbk") + b".jpg"))
    with open(broken, "wb") as handle:
        handle.write(b"\xff\xd8 not a photo")
    run = dedupe(tmp_path / "ex", "--tier", tier, "--json")
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr
    answer = json.loads(run.stdout)
    assert [sorted(Path(p).name for p in g) for g in answer["groups"]] == [[GBK_READABLE, "a.jpg"]]
    (unread,) = answer["unread"]
    assert unread["path"] == str(tmp_path / "ex" / "\\xbb\\xb5.jpg") and unread["reason"]
    line = f"shiwu: {unread['path']}: {unread['reason']}: left out of the exact and near tiers"
    assert line in run.stderr.splitlines(), run.stderr
