"""Image embeddings stored and searched: index folders (SQLite + faiss), Milvus collections,
similar-image search and near-duplicate groups. numpy in, numpy and rows out; no torch here.

::

    from shiwu.index import Manifest, IndexRow, open_or_create_index, near_duplicate_groups
    with open_or_create_index("索引", Manifest(model="efficientnet-lite0", dimension=1280)) as index:
        todo = index.rows_needing(paths)                 # new or changed files only (resume)
        index.upsert([IndexRow.for_file(p, model=...) for p in todo], vectors)
        index.search(query_vectors, k=10)                # per query [(score, IndexRow), ...]
        near_duplicate_groups(index)                     # [[representative, duplicate, ...]]

A location is a folder (a local index) or a Milvus store: ``milvus://HOST:PORT/COLLECTION``,
or a Milvus Lite file ``PATH.db`` / ``PATH.db#COLLECTION``.
"""

from __future__ import annotations

import os

from .base import Index, Match
from .dedupe import DEFAULT_DUPLICATE_THRESHOLD, near_duplicate_groups
from .errors import IndexExistsError, IndexFormatError, IndexMismatchError
from .faiss_engine import FaissEngine, FaissSettings
from .local import LocalIndex
from .manifest import FORMAT_VERSION, Manifest
from .milvus import MilvusIndex, is_milvus_location
from .rows import IndexRow, real_path, row_id


def open_index(location: str | os.PathLike, *, model: str | None = None,
               dimension: int | None = None, weights_hash: str | None = None,
               engine: dict | None = None, preprocessing: dict | None = None,
               precision: str | None = None) -> Index:
    """Open an existing index; with ``model``/``dimension``/``weights_hash``/``preprocessing``/
    ``precision`` given, raise IndexMismatchError unless it was built with them. ``engine``
    overrides search settings of a local index for this session (e.g. ``{"nprobe": 64}``)."""
    location = os.fspath(location)
    if is_milvus_location(location):
        index = MilvusIndex.open(location)
    else:
        index = LocalIndex.open(location, engine=engine)
    try:
        index.manifest.check_compatible(location, model=model, dimension=dimension,
                                        weights_hash=weights_hash, preprocessing=preprocessing,
                                        precision=precision)
    except IndexMismatchError:
        index.close()
        raise
    return index


def create_index(location: str | os.PathLike, manifest: Manifest) -> Index:
    """Create a new, empty index (a new or empty folder, or a new Milvus collection)."""
    location = os.fspath(location)
    if is_milvus_location(location):
        return MilvusIndex.create(location, manifest)
    return LocalIndex.create(location, manifest)


def index_exists(location: str | os.PathLike) -> bool:
    location = os.fspath(location)
    if is_milvus_location(location):
        client, collection = MilvusIndex._client(location)
        try:
            return client.has_collection(collection)
        finally:
            client.close()
    return os.path.exists(os.path.join(location, "manifest.json"))


def open_or_create_index(location: str | os.PathLike, manifest: Manifest) -> Index:
    """What ``shiwu index --out`` needs: the existing index (checked against ``manifest``'s
    model, weights, dimension, preprocessing and precision) or a new one."""
    if index_exists(location):
        return _open_like(location, manifest)
    return create_or_join(location, manifest)


def create_or_join(location: str | os.PathLike, manifest: Manifest) -> Index:
    """A new index, or, when another process has just created it (two first runs into one
    new folder), that one, if it holds the same kind of vectors: the second writer adds its
    rows instead of failing after all its work."""
    try:
        return create_index(location, manifest)
    except IndexExistsError:
        return _open_like(location, manifest)


def _open_like(location, manifest: Manifest) -> Index:
    return open_index(location, model=manifest.model, dimension=manifest.dimension,
                      weights_hash=manifest.weights_hash, preprocessing=manifest.preprocessing,
                      precision=manifest.precision)


__all__ = ["Index", "Match", "LocalIndex", "MilvusIndex", "Manifest", "IndexRow",
           "FaissEngine", "FaissSettings", "IndexFormatError", "IndexMismatchError", "IndexExistsError",
           "FORMAT_VERSION", "DEFAULT_DUPLICATE_THRESHOLD", "open_index", "create_index",
           "open_or_create_index", "create_or_join", "index_exists", "near_duplicate_groups", "real_path", "row_id"]
