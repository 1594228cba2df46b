"""An index in a Milvus collection: the same rows, metadata and manifest as a local index, for
when one machine is not enough.

``milvus://HOST:PORT/COLLECTION`` reaches a Milvus server (token, if it needs one, from
``MILVUS_TOKEN``); a path ending ``.db`` (optionally ``.db#COLLECTION``) is a Milvus Lite file:
a real Milvus engine in-process, which is how the tests run this code. Every read asks for
Strong consistency: Milvus's default (Bounded) can hide rows written a moment ago.

The collection is the truth here (no SQLite beside it). The manifest lives in the collection's
properties; rows that failed have a zero vector and ``has_vector`` false, and every search
filters them out. Row ids are the same path hashes as locally, so upserts are idempotent and a
resumed run after kill -9 leaves every file once.
"""

from __future__ import annotations

import math
import os
import re
from typing import Iterator, Sequence

import numpy as np

from .base import Index, Match
from .errors import IndexExistsError, IndexFormatError, IndexUnreachable
from .manifest import Manifest
from .rows import FIELDS, IndexRow

MANIFEST_PROPERTY = "shiwu.manifest"
DEFAULT_COLLECTION = "shiwu_images"
STRONG = "Strong"
WRITE_CHUNK = 512        # rows per request: 512 x 2048-d floats stays far below gRPC's 64 MB
QUERY_CHUNK = 1024
TEXT_LIMITS = {"path": 4096, "real_path": 4096, "model": 512, "label": 1024,
               "error_type": 256, "error_message": 4096}
NUMBERS = {"size": "INT64", "mtime_ns": "INT64", "score": "DOUBLE"}  # as SQLite REAL: the same score back
SERVER_URI = re.compile(r"^milvus://(?P<address>[^/]+)/(?P<collection>[A-Za-z_][A-Za-z0-9_]*)$")


def is_milvus_location(location: str | os.PathLike) -> bool:
    text = os.fspath(location)
    if text.startswith("milvus://"):
        return True
    file = text.split("#", 1)[0]
    # Milvus Lite keeps its .db as a folder: only a local index has a manifest.json inside
    return file.endswith(".db") and not os.path.exists(os.path.join(file, "manifest.json"))


def parse_location(location: str) -> tuple[str, str, str]:
    """(client uri, token, collection) for a milvus:// URI or a Milvus Lite file."""
    if location.startswith("milvus://"):
        match = SERVER_URI.match(location)
        if not match:
            raise ValueError(f"cannot read {location!r}: write milvus://HOST:PORT/COLLECTION "
                             "(a collection name of letters, digits and _)")
        return (f"http://{match['address']}", os.environ.get("MILVUS_TOKEN", ""),
                match["collection"])
    file, _, collection = location.partition("#")
    return os.path.abspath(file), "", collection or DEFAULT_COLLECTION


def _fit(text: str | None, limit: int) -> str | None:
    """Milvus refuses a VARCHAR longer than its max_length (bytes): cut at a character."""
    if text is None:
        return None
    data = text.encode("utf-8", "surrogateescape")
    return text if len(data) <= limit else data[:limit].decode("utf-8", "ignore")


class MilvusIndex(Index):
    def __init__(self, location: str, client, collection: str, manifest: Manifest):
        self.location = location
        self.client = client
        self.collection = collection
        self.manifest = manifest

    @staticmethod
    def _client(location: str):
        try:
            from pymilvus import MilvusClient
        except ImportError:
            raise ImportError("a Milvus index needs pymilvus (and milvus-lite for a .db file): "
                              "pip install 'shiwu[milvus]'") from None
        from pymilvus.exceptions import MilvusException

        uri, token, collection = parse_location(location)
        try:
            return MilvusClient(uri=uri, token=token), collection
        except MilvusException as exc:  # the client connects as it is made
            raise IndexUnreachable(f"cannot reach the Milvus store {location}: "
                                   f"{getattr(exc, 'message', None) or exc}") from None

    @classmethod
    def create(cls, location: str, manifest: Manifest) -> "MilvusIndex":
        from pymilvus import DataType, MilvusClient

        client, collection = cls._client(location)
        if client.has_collection(collection):
            raise IndexExistsError(f"collection {collection} already exists at {location}: "
                                   "open it instead, or drop it first")
        # FLAT is exact (what Lite is for); a cluster may prefer AUTOINDEX or HNSW here
        manifest.engine = {"engine": "milvus", "index_type": "FLAT", "params": {},
                           **{k: v for k, v in manifest.engine.items() if k != "engine"}}
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        for name in FIELDS:
            if name in TEXT_LIMITS:
                schema.add_field(name, DataType.VARCHAR, max_length=TEXT_LIMITS[name],
                                 nullable=name in ("label", "error_type", "error_message"))
            else:
                schema.add_field(name, getattr(DataType, NUMBERS[name]), nullable=name == "score")
        schema.add_field("has_vector", DataType.BOOL)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=manifest.dimension)
        index_params = client.prepare_index_params()
        index_params.add_index(field_name="vector", index_type=manifest.engine["index_type"],
                               metric_type="IP", params=manifest.engine.get("params") or {})
        client.create_collection(collection, schema=schema, index_params=index_params,
                                 consistency_level=STRONG)
        client.alter_collection_properties(collection,
                                           properties={MANIFEST_PROPERTY: manifest.to_json()})
        return cls(location, client, collection, manifest)

    @classmethod
    def open(cls, location: str) -> "MilvusIndex":
        client, collection = cls._client(location)
        if not client.has_collection(collection):
            raise IndexFormatError(f"no collection {collection} at {location}: build one with "
                                   f"`shiwu index PHOTOS... --store {location}`")
        description = client.describe_collection(collection)
        text = (description.get("properties") or {}).get(MANIFEST_PROPERTY)
        if not text:
            raise IndexFormatError(f"collection {collection} at {location} is not a shiwu "
                                   "index (it has no shiwu manifest)")
        manifest = Manifest.from_json(text, location)
        dims = [f.get("params", {}).get("dim") for f in description["fields"]
                if f["name"] == "vector"]
        if not dims or int(dims[0]) != manifest.dimension:
            raise IndexFormatError(f"collection {collection} at {location} holds "
                                   f"{dims[0] if dims else 'no'}-d vectors but its manifest says "
                                   f"{manifest.dimension}-d: it is damaged; rebuild it")
        # A collection is searchable only while loaded; a server restart, or Milvus Lite opened
        # by another process, finds it released.
        client.load_collection(collection)
        return cls(location, client, collection, manifest)

    def close(self) -> None:
        self.client.close()

    # -- storage -------------------------------------------------------------------------

    def _write(self, rows: list[IndexRow], vectors: list[np.ndarray | None]) -> None:
        zero = np.zeros(self.manifest.dimension, np.float32)
        records = []
        for row, vector in zip(rows, vectors):
            record = {name: getattr(row, name) for name in FIELDS}
            for name, limit in TEXT_LIMITS.items():
                record[name] = _fit(record[name], limit)
            if record["score"] is not None and not math.isfinite(record["score"]):
                record["score"] = None
            record.update(id=row.id, has_vector=vector is not None,
                          vector=zero if vector is None else vector)
            records.append(record)
        for start in range(0, len(records), WRITE_CHUNK):
            self.client.upsert(self.collection, records[start:start + WRITE_CHUNK])

    def _get(self, ids: Sequence[int], fields: list[str]) -> list[dict]:
        found = []
        ids = [int(i) for i in ids]
        for start in range(0, len(ids), QUERY_CHUNK):
            found += self.client.get(self.collection, ids=ids[start:start + QUERY_CHUNK],
                                     output_fields=fields, consistency_level=STRONG)
        return found

    def _delete(self, ids: list[int]) -> int:
        present = [r["id"] for r in self._get(ids, ["id"])]  # Milvus echoes ids, not a count
        for start in range(0, len(present), QUERY_CHUNK):
            self.client.delete(self.collection, ids=present[start:start + QUERY_CHUNK])
        return len(present)

    def _states(self, ids: list[int]) -> dict[int, tuple[int, int]]:
        return {r["id"]: (r["size"], r["mtime_ns"]) for r in self._get(ids, ["size", "mtime_ns"])}

    @staticmethod
    def _row(entity: dict) -> IndexRow:
        return IndexRow(**{name: entity.get(name) for name in FIELDS})

    def rows(self, ids: Sequence[int]) -> dict[int, IndexRow]:
        return {r["id"]: self._row(r) for r in self._get(ids, list(FIELDS))}

    def _iterate(self, fields: list[str], filter: str = "", batch: int = QUERY_CHUNK):
        iterator = self.client.query_iterator(self.collection, batch_size=batch, filter=filter,
                                              output_fields=fields, consistency_level=STRONG)
        try:
            while page := iterator.next():
                yield page
        finally:
            iterator.close()

    def all_rows(self) -> Iterator[IndexRow]:
        for page in self._iterate(list(FIELDS)):
            yield from (self._row(entity) for entity in page)

    def iter_vectors(self, chunk_rows: int = 8192):
        for page in self._iterate(["id", "vector"], "has_vector == true", min(chunk_rows, 16384)):
            yield (np.array([e["id"] for e in page], np.int64),
                   np.array([e["vector"] for e in page], np.float32))

    def _count(self, filter: str) -> int:
        result = self.client.query(self.collection, filter=filter, output_fields=["count(*)"],
                                   consistency_level=STRONG)
        return int(result[0]["count(*)"])

    def counts(self) -> dict:
        rows, vectors = self._count(""), self._count("has_vector == true")
        return {"rows": rows, "vectors": vectors, "errors": rows - vectors}

    # -- search --------------------------------------------------------------------------

    def _search(self, queries: np.ndarray, k: int, fields: list[str]):
        hits = []
        for start in range(0, len(queries), QUERY_CHUNK):
            hits += self.client.search(
                self.collection, data=queries[start:start + QUERY_CHUNK], limit=int(k),
                filter="has_vector == true", output_fields=fields,
                search_params={"metric_type": "IP", "params": self.manifest.engine.get(
                    "search_params") or {}}, consistency_level=STRONG)
        return hits

    def search_ids(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores = np.full((len(queries), k), -np.inf, np.float32)
        ids = np.full((len(queries), k), -1, np.int64)
        for q, found in enumerate(self._search(queries, k, [])):
            for rank, hit in enumerate(found):
                scores[q, rank], ids[q, rank] = hit["distance"], hit["id"]
        return scores, ids

    def _search_rows(self, queries: np.ndarray, k: int) -> list[list[Match]]:
        return [[(float(hit["distance"]), self._row(hit["entity"])) for hit in found]
                for found in self._search(queries, k, list(FIELDS))]
