"""The local index folder: round trips, identity by real path, resume and prune, the derived
faiss file, and the errors for folders that cannot be used."""

from __future__ import annotations

import json
import os
import sqlite3

import faiss
import numpy as np
import pytest

from support.index_helpers import clustered, make_files, random_vectors, rows_for, unit
from shiwu.index import (FORMAT_VERSION, IndexFormatError, IndexMismatchError, IndexRow,
                         Manifest, create_index, open_index, open_or_create_index)
from shiwu.index.local import FAISS_RECORD, MANIFEST, TABLE, VECTORS

DIM = 16


def new_index(tmp_path, **engine):
    return create_index(tmp_path / "index", Manifest(model="test-model", dimension=DIM,
                                                     weights_hash="abc123", engine=engine))


@pytest.fixture
def filled(tmp_path):
    """An index of 40 files with random vectors, closed (flushed) and reopened."""
    paths = make_files(tmp_path / "photos", 40)
    vectors = random_vectors(40, DIM)
    with new_index(tmp_path) as index:
        index.upsert(rows_for(paths), vectors)
    return tmp_path / "index", paths, vectors


def test_round_trip_search_finds_each_vector_first(filled):
    location, paths, vectors = filled
    with open_index(location) as index:
        assert index.counts() == {"rows": 40, "vectors": 40, "errors": 0}
        results = index.search(vectors, k=3)
        assert [r[0][1].path for r in results] == [str(p) for p in paths]
        assert all(r[0][0] == pytest.approx(1.0, abs=1e-5) for r in results)
        assert all(len(r) == 3 and r[0][0] >= r[1][0] >= r[2][0] for r in results)
        row = results[0][0][1]
        assert (row.label, row.score, row.model, row.size) == (
            "虎斑猫", 0.5, "test-model", paths[0].stat().st_size)
    manifest = json.loads((location / MANIFEST).read_text(encoding="utf-8"))
    assert manifest["counts"] == {"rows": 40, "vectors": 40, "errors": 0}
    assert (manifest["format_version"], manifest["dimension"], manifest["model"]) == (
        FORMAT_VERSION, DIM, "test-model")


def test_a_file_named_two_ways_is_one_row(tmp_path):
    paths = make_files(tmp_path / "photos", 2)
    link = tmp_path / "link.jpg"
    link.symlink_to(paths[0])
    other_spelling = tmp_path / "photos" / ".." / "photos" / paths[0].name
    vectors = random_vectors(3, DIM)
    with new_index(tmp_path) as index:
        index.upsert(rows_for([paths[0], paths[1]]), vectors[:2])
        index.upsert(rows_for([link]), vectors[2:])
        assert len(index) == 2
        assert index.rows_needing([other_spelling, link, paths[1]]) == []
        match = index.search(vectors[2], k=1)[0][0]
        assert match[1].path == str(link) and match[1].real_path == str(paths[0].resolve())
        assert match[0] == pytest.approx(1.0, abs=1e-5)  # the vector was replaced too


def test_rows_needing_lists_new_changed_and_unreadable_files_once(tmp_path):
    paths = make_files(tmp_path / "photos", 5)
    with new_index(tmp_path) as index:
        index.upsert(rows_for(paths[:4]), random_vectors(4, DIM))
        paths[1].write_bytes(b"longer content than before" * 10)          # size changed
        stat = paths[2].stat()
        os.utime(paths[2], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # mtime changed
        missing = tmp_path / "photos" / "gone.jpg"
        asked = [paths[0], paths[1], paths[2], paths[3], paths[4], paths[4], missing]
        assert index.rows_needing(asked) == [str(paths[1]), str(paths[2]), str(paths[4]),
                                             str(missing)]


def test_error_rows_are_kept_but_never_found(tmp_path):
    paths = make_files(tmp_path / "photos", 3)
    vectors = random_vectors(3, DIM)
    rows = rows_for(paths)
    bad = IndexRow.for_file(paths[1], model="test-model", error_type="ImageError",
                            error_message="cannot identify image file")
    with new_index(tmp_path) as index:
        index.upsert([rows[0], bad, rows[2]], [vectors[0], None, vectors[2]])
        assert index.counts() == {"rows": 3, "vectors": 2, "errors": 1}
        assert index.rows_needing(paths) == []  # a bad file is not retried until it changes
        found = [row.path for _, row in index.search(vectors[1], k=10)[0]]
        assert sorted(found) == sorted([str(paths[0]), str(paths[2])])
        stored = index.rows([bad.id])[bad.id]
        assert (stored.error_type, stored.error_message) == ("ImageError",
                                                              "cannot identify image file")


def test_remove_by_path_or_id_and_prune(filled, tmp_path):
    location, paths, vectors = filled
    with open_index(location) as index:
        assert index.remove([paths[0], IndexRow.for_file(paths[1]).id, tmp_path / "nope"]) == 2
        assert len(index) == 38
        assert paths[0] not in [r.path for _, r in index.search(vectors[0], k=40)[0]]
        assert index.prune(paths[:30]) == 10  # rows not among the existing paths go
        paths[2].unlink()
        assert index.prune() == 1              # no list: rows whose file vanished go
        assert len(index) == 27
    with open_index(location) as index:        # and it stays so
        assert sorted(r.path for r in index.all_rows()) == sorted(map(str, paths[3:30]))


def test_wrong_vectors_are_refused(tmp_path):
    paths = make_files(tmp_path / "photos", 2)
    with new_index(tmp_path) as index:
        with pytest.raises(IndexMismatchError, match="16-d"):
            index.upsert(rows_for(paths), random_vectors(2, DIM + 1))
        with pytest.raises(ValueError, match="L2-normalised"):
            index.upsert(rows_for(paths), 2 * random_vectors(2, DIM))
        with pytest.raises(IndexMismatchError):
            index.search(random_vectors(1, 8), k=1)
        assert len(index) == 0


def test_open_or_create_checks_the_model(tmp_path, filled):
    location, _, _ = filled
    same = Manifest(model="test-model", dimension=DIM, weights_hash="abc123")
    with open_or_create_index(location, same) as index:
        assert len(index) == 40
    for other in (Manifest(model="other-model", dimension=DIM),
                  Manifest(model="test-model", dimension=2 * DIM),
                  Manifest(model="test-model", dimension=DIM, weights_hash="fff999")):
        with pytest.raises(IndexMismatchError, match="was built with"):
            open_or_create_index(location, other)
    with open_or_create_index(tmp_path / "fresh", same) as index:
        assert len(index) == 0


def test_corrupt_faiss_file_is_rebuilt_not_trusted(filled):
    location, _, vectors = filled
    data = bytearray((location / VECTORS).read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the vector data: faiss would load it
    (location / VECTORS).write_bytes(bytes(data))
    with open_index(location) as index:
        scores, _ = index.search_ids(vectors, 1)
        assert np.allclose(scores[:, 0], 1.0, atol=1e-5)
    rebuilt = faiss.read_index(str(location / VECTORS))
    assert rebuilt.ntotal == 40 and bytes(faiss.serialize_index(rebuilt)) != bytes(data)


def test_truncated_faiss_file_is_rebuilt(filled):
    location, _, vectors = filled
    (location / VECTORS).write_bytes(b"IxMp")
    with open_index(location) as index:
        assert index.search(vectors[5], k=1)[0][0][0] == pytest.approx(1.0, abs=1e-5)


def test_another_writer_makes_the_reader_reload(filled, tmp_path):
    location, _, _ = filled
    reader = open_index(location)
    reader.search(random_vectors(1, DIM), k=1)  # engine loaded
    new = make_files(tmp_path / "more", 1, prefix="new")
    vector = random_vectors(1, DIM, seed=99)
    with open_index(location) as writer:
        writer.upsert(rows_for(new), vector)
    assert reader.search(vector, k=1)[0][0][1].path == str(new[0])
    reader.close()


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_engines_find_the_true_neighbours(tmp_path, kind):
    vectors, _ = clustered(centres=40, per_centre=50, dimension=DIM, noise=0.5)
    paths = make_files(tmp_path / "photos", len(vectors))
    with new_index(tmp_path, kind=kind, nlist=16, nprobe=8) as index:
        index.upsert(rows_for(paths), vectors)
        queries = unit(vectors[::50] + 0.05)
        exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
        expected = [{str(paths[i]) for i in row} for row in exact]
        found = [{r.path for _, r in hits} for hits in index.search(queries, k=10)]
        recall = np.mean([len(f & e) / 10 for f, e in zip(found, expected)])
        assert recall >= 0.9
        assert index.engine.structure["kind"] == kind
        index.remove(paths[:50])  # HNSW cannot remove in place: rebuilt from the table
        assert not {r.path for _, r in index.search(queries[0], k=10)[0]} & set(map(str, paths[:50]))


def test_flush_restructures_when_the_index_outgrows_flat(tmp_path):
    vectors, _ = clustered(centres=20, per_centre=100, dimension=DIM, noise=0.5)
    paths = make_files(tmp_path / "photos", len(vectors))
    with new_index(tmp_path, flat_max_values=500 * DIM) as index:
        index.upsert(rows_for(paths[:400]), vectors[:400])
        index.flush()
        assert index.table.get_meta(FAISS_RECORD)["structure"] == {"kind": "flat"}
        index.upsert(rows_for(paths[400:]), vectors[400:])
    with open_index(tmp_path / "index") as index:
        record = index.table.get_meta(FAISS_RECORD)
        assert record["structure"]["kind"] == "ivf"
        assert record["generation"] == index.table.generation
        assert index.engine.count == 2000


def test_the_folder_holds_json_sqlite_and_faiss_only(filled):
    location, _, _ = filled
    names = {name for name in os.listdir(location) if not name.endswith(("-wal", "-shm"))}
    assert names == {MANIFEST, TABLE, VECTORS}
    json.loads((location / MANIFEST).read_text(encoding="utf-8"))
    assert (location / TABLE).read_bytes()[:16] == b"SQLite format 3\x00"
    assert faiss.read_index(str(location / VECTORS)).ntotal == 40
    for name in os.listdir(location):
        assert (location / name).read_bytes()[:1] != b"\x80"  # pickle protocol 2+ opcode


# -- errors that say what to do ------------------------------------------------------------

def test_not_an_index(tmp_path):
    with pytest.raises(IndexFormatError, match="no index at"):
        open_index(tmp_path / "missing")
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_bytes(b"x")
    with pytest.raises(IndexFormatError, match="not a shiwu index"):
        open_index(tmp_path / "photos")
    with pytest.raises(IndexFormatError, match="not an empty folder"):
        create_index(tmp_path / "photos", Manifest(model="m", dimension=4))


def test_unknown_format_version(filled):
    location, _, _ = filled
    manifest = json.loads((location / MANIFEST).read_text(encoding="utf-8"))
    manifest["format_version"] = FORMAT_VERSION + 1
    (location / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(IndexFormatError, match="upgrade shiwu"):
        open_index(location)


def test_corrupt_manifest(filled):
    location, _, _ = filled
    (location / MANIFEST).write_text('{"format": "shiwu-index", "form', encoding="utf-8")
    with pytest.raises(IndexFormatError, match="manifest .* is corrupt"):
        open_index(location)


def test_corrupt_sqlite(filled):
    location, _, _ = filled
    for name in os.listdir(location):
        if name.endswith(("-wal", "-shm")):
            os.unlink(location / name)
    data = bytearray((location / TABLE).read_bytes())
    data[:100] = os.urandom(100)  # the header: SQLite no longer recognises the file
    (location / TABLE).write_bytes(bytes(data))
    with pytest.raises(IndexFormatError, match="corrupt"):
        open_index(location)


def test_a_foreign_sqlite_file(filled):
    location, _, _ = filled
    os.unlink(location / TABLE)
    sqlite3.connect(location / TABLE).execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(IndexFormatError, match="not a shiwu index table"):
        open_index(location)


def test_manifest_from_another_index(tmp_path, filled):
    location, _, _ = filled
    other = create_index(tmp_path / "other", Manifest(model="m2", dimension=DIM))
    other.close()
    (location / MANIFEST).write_bytes((tmp_path / "other" / MANIFEST).read_bytes())
    with pytest.raises(IndexFormatError, match="describe different indexes"):
        open_index(location)


def test_open_with_another_model_or_dimension(filled):
    location, _, _ = filled
    with pytest.raises(IndexMismatchError, match="model 'test-model', not 'efficientnet-lite0'"):
        open_index(location, model="efficientnet-lite0")
    with pytest.raises(IndexMismatchError, match="16-d vectors, not 1280-d"):
        open_index(location, dimension=1280)


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_own_writes_update_the_loaded_engine_in_place(tmp_path, kind):
    vectors, _ = clustered(centres=10, per_centre=50, dimension=DIM, noise=0.5)
    paths = make_files(tmp_path / "photos", len(vectors) + 1)
    with new_index(tmp_path, kind=kind, nlist=8, nprobe=8) as index:
        index.upsert(rows_for(paths[:-1]), vectors)
        engine = index.engine
        extra = random_vectors(1, DIM, seed=7)
        index.upsert(rows_for(paths[-1:]), extra)  # a new file: added, nothing rebuilt
        assert index.engine is engine
        assert index.search(extra, k=1)[0][0][1].path == str(paths[-1])
        index.upsert(rows_for(paths[:1]), extra)    # a changed file: its old vector must go
        assert (index.engine is engine) == (kind != "hnsw")  # HNSW cannot remove: rebuilt
        hits = index.search(extra, k=2)[0]
        assert sorted(r.path for _, r in hits) == sorted([str(paths[0]), str(paths[-1])])
        assert index.engine.count == len(paths)


def test_the_index_needs_neither_torch_nor_milvus(tmp_path):
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        import sys
        import numpy as np
        from shiwu.index import Manifest, IndexRow, create_index, open_index
        with create_index({str(tmp_path / 'index')!r}, Manifest(model="m", dimension=4)) as index:
            index.upsert([IndexRow("a.jpg", "/a.jpg", 1, 1)], np.eye(1, 4, dtype=np.float32))
        with open_index({str(tmp_path / 'index')!r}) as index:
            assert index.search(np.eye(1, 4, dtype=np.float32), 1)[0][0][1].path == "a.jpg"
        print(sorted(m for m in ("torch", "pymilvus", "milvus_lite") if m in sys.modules))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]"
