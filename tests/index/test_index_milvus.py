"""The Milvus store, run on Milvus Lite (a real Milvus engine in-process): the same rows and
answers as the local faiss index, Strong consistency, and the same manifest checks."""

from __future__ import annotations

import numpy as np
import pytest

from support.index_helpers import clustered, make_files, rows_for
from shiwu.index import (IndexFormatError, IndexMismatchError, IndexRow, Manifest, MilvusIndex,
                         create_index, near_duplicate_groups, open_index, open_or_create_index)
from shiwu.index.milvus import is_milvus_location, parse_location

pytestmark = pytest.mark.milvus

DIM = 24


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("milvus-data")
    vectors, _ = clustered(centres=30, per_centre=10, dimension=DIM, noise=0.6, seed=3)
    return make_files(folder / "photos", len(vectors)), vectors


def manifest(**changes):
    return Manifest(**{"model": "test-model", "dimension": DIM, "weights_hash": "abc", **changes})


def test_locations():
    assert parse_location("milvus://db.example:19530/photos") == ("http://db.example:19530", "",
                                                                   "photos")
    assert parse_location("/x/lite.db#mine") == ("/x/lite.db", "", "mine")
    assert is_milvus_location("milvus://h:1/c") and is_milvus_location("a/b.db")
    assert not is_milvus_location("a/b")
    with pytest.raises(ValueError, match="milvus://HOST:PORT/COLLECTION"):
        parse_location("milvus://host:19530/bad-name")


@pytest.mark.slow
def test_same_top_k_as_faiss_flat(tmp_path, data):
    paths, vectors = data
    queries = vectors[::7] + 0.01
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    with create_index(tmp_path / "local", manifest(engine={"kind": "flat"})) as local, \
            create_index(str(tmp_path / "lite.db"), manifest()) as milvus:
        assert isinstance(milvus, MilvusIndex)
        for index in (local, milvus):
            index.upsert(rows_for(paths), vectors)
        # Strong consistency: what was just written is searched, with nothing waited for
        expected = local.search(queries, k=10)
        found = milvus.search(queries, k=10)
        assert [[r.path for _, r in hits] for hits in found] == \
               [[r.path for _, r in hits] for hits in expected]
        assert np.allclose([[s for s, _ in hits] for hits in found],
                           [[s for s, _ in hits] for hits in expected], atol=1e-5)
        assert found[0][0][1] == expected[0][0][1]  # every metadata field survives the trip
        assert milvus.counts() == local.counts() == {"rows": 300, "vectors": 300, "errors": 0}
        assert near_duplicate_groups(milvus, 0.8) == near_duplicate_groups(local, 0.8)


def test_resume_remove_prune_and_error_rows(tmp_path, data):
    paths, vectors = data
    location = str(tmp_path / "lite.db#photos")
    with open_or_create_index(location, manifest()) as index:
        index.upsert(rows_for(paths[:100]), vectors[:100])
        index.upsert(rows_for(paths[50:100]), vectors[50:100])  # again: still once each
        bad = IndexRow.for_file(paths[100], model="test-model", error_type="ImageError",
                                error_message="truncated" * 1000)  # longer than the field
        index.upsert([bad], [None])
        assert index.counts() == {"rows": 101, "vectors": 100, "errors": 1}
        assert index.rows_needing(paths[:120]) == [str(p) for p in paths[101:120]]
        assert all(r.path != str(paths[100]) for _, r in index.search(vectors[100], k=200)[0])
    with open_index(location, model="test-model", dimension=DIM) as index:
        assert index.remove([paths[0], paths[1], paths[200]]) == 2
        assert index.prune(paths[:60]) == 101 - 2 - 58
        assert sorted(r.path for r in index.all_rows()) == sorted(map(str, paths[2:60]))
        ids, stored = zip(*index.iter_vectors())
        assert np.concatenate(ids).size == 58 and np.concatenate(stored).shape == (58, DIM)


def test_manifest_checks(tmp_path, data):
    paths, vectors = data
    location = str(tmp_path / "lite.db")
    create_index(location, manifest()).close()
    with pytest.raises(IndexMismatchError, match="was built with model 'test-model'"):
        open_index(location, model="efficientnet-lite0")
    with pytest.raises(IndexMismatchError, match="24-d vectors, not 2048-d"):
        open_or_create_index(location, manifest(dimension=2048))
    with pytest.raises(IndexFormatError, match="already exists"):
        create_index(location, manifest())
    with pytest.raises(IndexFormatError, match="no collection other"):
        open_index(location + "#other")
    with open_index(location) as index:
        with pytest.raises(IndexMismatchError):
            index.upsert(rows_for(paths[:1]), np.ones((1, DIM + 1), np.float32))
        # a collection made by something else is not taken for an index
        from pymilvus import DataType, MilvusClient
        schema = MilvusClient.create_schema(auto_id=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=4)
        index.client.create_collection("foreign", schema=schema)
    with pytest.raises(IndexFormatError, match="not a shiwu index"):
        open_index(location + "#foreign")
