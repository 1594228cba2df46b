"""The work behind GET /v1/duplicates (shiwu.server.duplicates) on a real index of real files:
it never blocks the event loop on the served index's lock, runs one search at a time, hands a
late answer to the next request, leaves out files changed since they were indexed and names
them, and reads a copy whose name is not UTF-8 like any other."""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from support.index_helpers import random_vectors, rows_for
from support.photos import DATA
from shiwu.index import Manifest, create_index
from shiwu.server.duplicates import Busy, DuplicateFinder


@pytest.fixture
def served(tmp_path):
    rng = np.random.default_rng(3)
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("a", "c"):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), np.uint8)).save(folder / f"{name}.png")
    shutil.copy(folder / "a.png", folder / "b.png")
    shutil.copy(folder / "a.png", folder / "d.png")
    paths = sorted(folder.iterdir())
    index = create_index(tmp_path / "index", Manifest(model="m", dimension=8))
    index.upsert(rows_for(paths), random_vectors(len(paths), 8, seed=1))
    info = os.stat(folder / "d.png")
    os.utime(folder / "d.png", ns=(info.st_atime_ns, info.st_mtime_ns + 10 ** 9))  # changed since
    yield SimpleNamespace(index=index, lock=threading.Lock(), photos=folder)
    index.close()


def _names(groups):
    return [sorted(os.path.basename(i["path"]) for i in g["images"]) for g in groups]


def test_a_busy_index_makes_the_request_wait_at_most_its_timeout_and_the_answer_comes_later(served):
    finder = DuplicateFinder(served)

    async def scenario():
        served.lock.acquire()  # a search holds the index
        try:
            assert await finder.groups("exact", 0.92, 4, timeout=0.3) is None
            with pytest.raises(Busy):  # another search while this one runs
                await finder.groups("near", 0.92, 4, timeout=0.3)
        finally:
            served.lock.release()
        return await finder.groups("exact", 0.92, 4, timeout=30)  # the same one: its answer

    found = asyncio.run(scenario())
    groups = found["groups"]
    assert _names(groups) == [["a.png", "b.png"]]  # d.png changed since indexing: left out
    assert [(i["path"].rsplit("/", 1)[-1], i["reason"]) for i in found["unread"]] == [
        ("d.png", "changed since it was indexed: run `shiwu index` again")]  # and named
    assert groups[0]["tier"] == "exact" and [i["match"] for i in groups[0]["images"]] == [None, "exact"]
    assert all(i["thumbnail"] == f"/v1/thumbnails/{i['id']}" for i in groups[0]["images"])


def test_an_answer_is_reused_until_the_index_changes(served):
    finder = DuplicateFinder(served)
    first = asyncio.run(finder.groups("near", 0.92, 4, timeout=30))
    os.remove(served.photos / "b.png")  # gone: a new search would leave it out
    assert asyncio.run(finder.groups("near", 0.92, 4, timeout=30)) is first
    again = asyncio.run(finder.groups("near", 0.92, 3, timeout=30))  # other row count: computed again
    assert again["groups"] == []  # b.png gone, d.png changed: both named
    assert {i["path"].rsplit("/", 1)[-1] for i in again["unread"]} == {"b.png", "d.png"}


def test_a_copy_whose_name_is_not_utf8_is_read_and_an_unreadable_file_is_named(tmp_path):
    # the row stores such a name as a file:// URI (its identity): reading the file by that text
    # found nothing, and the copy fell out of every tier without a word
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(DATA / "astronaut.jpg", folder / "a.jpg")
    gbk = os.path.join(os.fspath(folder), os.fsdecode("测试".encode("gbk") + b".jpg"))
    shutil.copy(DATA / "astronaut.jpg", gbk)
    shutil.copy(DATA / "camera.jpg", folder / "c.jpg")
    (folder / "broken.jpg").write_bytes(b"not a photo")
    paths = [folder / "a.jpg", gbk, folder / "c.jpg", folder / "broken.jpg"]
    with create_index(tmp_path / "index", Manifest(model="m", dimension=8)) as index:
        index.upsert(rows_for(paths), random_vectors(len(paths), 8, seed=2))
        found = asyncio.run(DuplicateFinder(SimpleNamespace(index=index, lock=threading.Lock())).groups(
            "exact", 0.92, len(paths), timeout=60))
    (group,) = found["groups"]
    assert _names([group]) == [["\\xb2\\xe2\\xca\\xd4.jpg", "a.jpg"]]  # the readable form
    assert group["tier"] == "exact" and [i["match"] for i in group["images"]] == [None, "exact"]
    (unread,) = found["unread"]
    assert unread["path"].endswith("broken.jpg") and unread["reason"] == "not a recognised image format"


def test_the_route_default_threshold_is_dedupes():
    from shiwu.index.dedupe import DEFAULT_DUPLICATE_THRESHOLD
    from shiwu.server.routes.duplicates import DEFAULT_THRESHOLD

    assert DEFAULT_THRESHOLD == DEFAULT_DUPLICATE_THRESHOLD
