"""Two first runs into one new index folder: the second writer waits its turn and adds its rows
(it used to embed everything, store nothing and say "already an index: open it instead"; through
the Python API it met a raw sqlite3.OperationalError)."""

import json
import subprocess
import sys
import threading

import pytest
from pathlib import Path

from support.index_helpers import make_files, random_vectors, rows_for

from support.photos import PHOTOS

from shiwu.index import IndexExistsError, Manifest, create_index, create_or_join, open_index

SHIWU = str(Path(sys.executable).parent / "shiwu")
FAST = ["--backend", "torch", "--threads", "1", "-q", "--workers", "0", "--batch-size", "2"]
DIM = 8


@pytest.mark.slow
def test_two_first_runs_into_one_new_index_both_store_their_rows(tmp_path):
    sets = []
    for name, photos in (("a", PHOTOS[:2]), ("b", PHOTOS[2:4])):
        folder = tmp_path / name
        folder.mkdir()
        for path in photos:
            (folder / f"{name}-{path.name}").write_bytes(path.read_bytes())
        sets.append(folder)
    out = tmp_path / "index"
    runs = [subprocess.Popen([SHIWU, "index", str(folder), "--out", str(out), *FAST],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8")
            for folder in sets]
    results = [(run.wait(timeout=600), run.stderr.read()) for run in runs]
    for code, stderr in results:
        assert code == 0, stderr
        assert "already an index" not in stderr and "Traceback" not in stderr
    with open_index(out) as index:
        names = sorted(Path(row.path).name for row in index.all_rows())
    assert names == sorted(f"{s.name}-{p.name}" for s, photos in zip(sets, (PHOTOS[:2], PHOTOS[2:4]))
                           for p in photos)
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["counts"]["rows"] == 4


def test_threads_creating_one_index_take_turns_and_join(tmp_path):
    location = tmp_path / "index"
    paths = make_files(tmp_path / "photos", 8)
    errors, raw = [], []

    def writer(part):
        try:
            with create_or_join(location, Manifest(model="m", dimension=DIM)) as index:
                index.upsert(rows_for(part), random_vectors(len(part), DIM, seed=len(raw)))
        except Exception as exc:  # noqa: BLE001 - the test reports any
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(paths[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    with open_index(location) as index:
        assert len(index) == 8


def test_plain_create_says_clearly_that_the_index_exists(tmp_path):
    location = tmp_path / "index"
    outcomes = []

    def creator():
        try:
            create_index(location, Manifest(model="m", dimension=DIM)).close()
            outcomes.append("created")
        except IndexExistsError:
            outcomes.append("exists")
        except Exception as exc:  # noqa: BLE001 - e.g. sqlite3.OperationalError: the bug
            outcomes.append(repr(exc))

    threads = [threading.Thread(target=creator) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(outcomes) == ["created", "exists", "exists", "exists"], outcomes
