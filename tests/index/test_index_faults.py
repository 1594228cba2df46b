"""An index on a file system that refuses writes (read-only, full) still answers, and a failed
write is one readable reason; files that cannot be indexed (dangling and looping links) are
counted as failed, as `shiwu batch` counts them."""

import errno
import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from support.index_helpers import FAST, make_files, random_vectors, rows_for, shiwu
from support.mounts import fill, read_only_view, small_disk
from support.photos import DATA, photo_library

from shiwu.index import FaissEngine, Manifest, create_index, open_index
from shiwu.index.local import TABLE, VECTORS



@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """An index built by `shiwu index` of the photo library (coffee with two edited copies)."""
    root = tmp_path_factory.mktemp("built")
    library = root / "library"
    library.mkdir()
    photo_library(library)
    run = shiwu("index", library, "--out", root / "index", *FAST)
    assert run.returncode == 1, run.stderr  # the library's one broken file
    return root / "index", library


def _files(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


def test_an_index_on_a_read_only_mount_answers_search_and_dedupe(built, tmp_path):
    index, library = built
    before = _files(index)
    with read_only_view(index, tmp_path / "ro") as view:
        found = shiwu("search", library / "coffee_bright.jpg", "--index", view, "--json", "--backend", "onnxruntime")
        assert found.returncode == 0, found.stderr
        names = [Path(m["image"]).name for m in json.loads(found.stdout)["matches"]]
        assert names[0] == "coffee_bright.jpg" and set(names[1:3]) == {"coffee.jpg", "咖啡 小.jpg"}
        groups = shiwu("dedupe", "--index", view, "--json", "--threshold", "0.8")
        assert groups.returncode == 0, groups.stderr
        coffee = next(g for g in json.loads(groups.stdout)["groups"] if any("coffee.jpg" in p for p in g))
        assert {Path(p).name for p in coffee} == {"coffee.jpg", "咖啡 小.jpg", "coffee_bright.jpg"}
        assert "Traceback" not in found.stderr + groups.stderr
    assert _files(index) == before  # nothing was made or changed beside it


def test_a_read_only_index_whose_vector_file_is_stale_rebuilds_it_in_memory(tmp_path):
    paths = make_files(tmp_path / "photos", 30)
    vectors = random_vectors(30, 16)
    with create_index(tmp_path / "index", Manifest(model="test-model", dimension=16, weights_hash="x")) as index:
        index.upsert(rows_for(paths), vectors)
    (tmp_path / "index" / VECTORS).unlink()  # as a copy made without it
    with read_only_view(tmp_path / "index", tmp_path / "ro") as view:
        with open_index(view) as index:
            assert index.table.read_only
            results = index.search(vectors[:5], k=1)
            assert [r[0][1].path for r in results] == [str(p) for p in paths[:5]]
        assert not (view / VECTORS).exists()
    assert sorted(p.name for p in (tmp_path / "index").iterdir()) == sorted(["manifest.json", TABLE])


def test_the_vector_file_on_a_full_disk_is_an_oserror_naming_the_full_disk(tmp_path):
    engine = FaissEngine.from_vectors(random_vectors(2000, 64))  # 512 KB of vectors
    with small_disk(tmp_path / "disk") as disk:
        with pytest.raises(OSError) as caught:
            engine.save(disk / VECTORS, generation=1)
        assert caught.value.errno == errno.ENOSPC and "No space left on device" in str(caught.value)
        assert list(disk.iterdir()) == []  # the temporary file went too


@pytest.mark.parametrize("reader", [False, True], ids=["closed", "another-reader-open"])
def test_search_on_a_full_disk_answers_without_saving_the_vector_file(built, tmp_path, reader):
    """Closed: the table's WAL files cannot be made either (it is read without them). Another
    reader open: they exist, the table opens as usual and only the vector file's save fails."""
    index, library = built
    with small_disk(tmp_path / "disk", size="1m") as disk:
        copy = disk / "index"
        shutil.copytree(index, copy, ignore=shutil.ignore_patterns(VECTORS))  # to be rebuilt
        other = sqlite3.connect(copy / TABLE) if reader else None
        if other is not None:
            other.execute("SELECT COUNT(*) FROM images").fetchone()
        try:
            fill(disk)
            found = shiwu("search", library / "coffee_bright.jpg", "--index", copy, "--json",
                          "--backend", "onnxruntime")
        finally:
            if other is not None:
                other.close()
        assert found.returncode == 0, found.stderr
        assert "Traceback" not in found.stderr and "faiss" not in found.stderr
        names = [Path(m["image"]).name for m in json.loads(found.stdout)["matches"]]
        assert names[0] == "coffee_bright.jpg"
        assert not (copy / VECTORS).exists() and not [p for p in copy.iterdir() if p.name.startswith(".tmp-")]


def test_indexing_onto_a_disk_that_fills_is_one_clean_line(tmp_path):
    # 100 KB: the table's first batches fit, the vector file beside them does not (faiss's own
    # writer printed "close error" lines, or its C++ source line, around shiwu's message)
    with small_disk(tmp_path / "disk", size="100k") as disk:
        run = shiwu("index", DATA, "--out", disk / "index", *FAST)
    assert run.returncode == 3, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "no space left on the device" in lines[0], lines
    assert "faiss" not in run.stderr and "Error in" not in run.stderr, lines


def test_dangling_and_looping_links_are_counted_as_failed_and_named(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("coffee.jpg", "rocket.jpg"):
        (folder / name).write_bytes((DATA / name).read_bytes())
    (folder / "dangling.jpg").symlink_to(folder / "nowhere.jpg")
    (folder / "loop.jpg").symlink_to(folder / "loop.jpg")
    run = shiwu("index", folder, "--out", tmp_path / "index", "--json", *FAST)
    assert run.returncode == 1, run.stderr  # some failed, as `shiwu batch` says of the same folder
    summary = json.loads(run.stdout)
    assert (summary["done"], summary["failed"], summary["rows"]) == (4, 2, 2), summary
    assert {Path(f["image"]).name for f in summary["failures"]} == {"dangling.jpg", "loop.jpg"}
    named = [line for line in run.stderr.splitlines() if "dangling.jpg" in line or "loop.jpg" in line]
    assert len(named) == 2, run.stderr
    assert "2 embedded, 2 failed" in run.stderr
