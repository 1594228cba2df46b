"""An index folder on this machine: manifest.json, images.sqlite (the rows, the truth) and
vectors.faiss (the search structure, derived from the rows and rebuilt when in doubt).

Data flows one way: rows go into the table; the faiss engine is built from the table and kept
in step with this process's own writes; another process's writes (seen as a newer table
generation) make this one rebuild or reload before its next search.
"""

from __future__ import annotations

import os
import sqlite3
from typing import Iterator, Sequence

import numpy as np

from .base import Index, Match
from ..fsutil import TEMP_PREFIX
from .errors import IndexExistsError, IndexFormatError
from .folder import clean_strays, folder_lock
from .faiss_engine import FaissEngine, FaissSettings
from .manifest import Manifest
from .rows import IndexRow
from .table import SqliteTable

MANIFEST = "manifest.json"
TABLE = "images.sqlite"
VECTORS = "vectors.faiss"
FILES = (MANIFEST, TABLE, VECTORS)
FAISS_RECORD = "faiss"


class LocalIndex(Index):
    def __init__(self, folder: str, manifest: Manifest, table: SqliteTable,
                 settings: FaissSettings):
        self.location = folder
        self.manifest = manifest
        self.table = table
        self.settings = settings
        self._engine: FaissEngine | None = None
        self._engine_generation = -1

    # -- opening -------------------------------------------------------------------------

    @classmethod
    def create(cls, folder: str | os.PathLike, manifest: Manifest) -> "LocalIndex":
        """A new index in ``folder`` (new or empty). Two processes creating the same folder
        take turns (a lock on the folder): the second finds the index made and gets
        IndexExistsError, which ``index.create_or_join`` turns into opening it."""
        folder = os.fspath(folder)
        if os.path.exists(os.path.join(folder, MANIFEST)):
            raise IndexExistsError(f"{folder} is already an index: open it instead "
                                   "(`shiwu index ... --out` adds to it)")
        if os.path.exists(folder) and not os.path.isdir(folder):
            raise IndexFormatError(f"{folder} exists and is not an empty folder: an index "
                                   "needs a folder of its own (give a new --out name)")
        os.makedirs(folder, exist_ok=True)
        with folder_lock(folder):
            if os.path.exists(os.path.join(folder, MANIFEST)):
                raise IndexExistsError(f"{folder} is already an index: open it instead "
                                       "(`shiwu index ... --out` adds to it)")
            if any(not name.startswith(TEMP_PREFIX) for name in os.listdir(folder)):
                raise IndexFormatError(f"{folder} exists and is not an empty folder: an index "
                                       "needs a folder of its own (give a new --out name)")
            settings = FaissSettings.from_dict(manifest.engine)
            manifest.engine = {"engine": "faiss", **settings.to_dict()}
            table = SqliteTable(os.path.join(folder, TABLE), manifest.dimension, create=True,
                                identity=manifest.identity())
            index = cls(folder, manifest, table, settings)
            # the manifest last: a folder without one is not an index yet, so a kill during
            # creation leaves something `create` refuses loudly instead of a half index
            index._write_manifest()
        return index

    @classmethod
    def open(cls, folder: str | os.PathLike, *, engine: dict | None = None) -> "LocalIndex":
        folder = os.fspath(folder)
        path = os.path.join(folder, MANIFEST)
        if not os.path.isdir(folder):
            raise IndexFormatError(f"no index at {folder}: build one with "
                                   f"`shiwu index PHOTOS... --out {folder}`")
        if not os.path.exists(path):
            raise IndexFormatError(f"{folder} is not a shiwu index (no {MANIFEST}): give the "
                                   "folder that `shiwu index --out` made")
        manifest = Manifest.read(path, folder)
        clean_strays(folder)
        table = SqliteTable(os.path.join(folder, TABLE), manifest.dimension)
        if table.identity() != manifest.identity():
            table.close()
            raise IndexFormatError(f"index {folder}: {MANIFEST} and {TABLE} describe different "
                                   "indexes (a file was copied from another one): rebuild it")
        settings = FaissSettings.from_dict(manifest.engine).with_options(**(engine or {}))
        return cls(folder, manifest, table, settings)

    def close(self) -> None:
        self.flush()
        self.table.close()

    # -- storage -------------------------------------------------------------------------

    def _write(self, rows: list[IndexRow], vectors: list[np.ndarray | None]) -> None:
        before = self.table.generation
        # only rows that were there already need removing from the engine: new files are
        # pure adds, which even HNSW takes in place
        replaced = list(self.table.states([row.id for row in rows])) if self._engine else []
        self.table.upsert(rows, vectors)
        added = [(row.id, v) for row, v in zip(rows, vectors) if v is not None]
        self._follow(before, np.array(replaced, np.int64), added)

    def _delete(self, ids: list[int]) -> int:
        before = self.table.generation
        removed = self.table.remove(ids)
        self._follow(before, np.array(ids, np.int64), [])
        return removed

    def _follow(self, before: int, removed: np.ndarray, added: list) -> None:
        """Apply this process's own write to the loaded engine, or drop the engine when that
        cannot be done exactly (another writer came between, or HNSW cannot remove)."""
        if self._engine is None:
            return
        after = self.table.generation
        if self._engine_generation != before or after != before + 1 \
                or (len(removed) and not self._engine.supports_remove):
            self._engine = None
            return
        if len(removed):
            self._engine.remove(removed)
        if added:
            self._engine.add(np.array([i for i, _ in added], np.int64),
                             np.stack([v for _, v in added]))
        self._engine_generation = after

    def _states(self, ids: list[int]) -> dict[int, tuple[int, int]]:
        return self.table.states(ids)

    def rows(self, ids: Sequence[int]) -> dict[int, IndexRow]:
        return self.table.rows(ids)

    def all_rows(self) -> Iterator[IndexRow]:
        return self.table.all_rows()

    def iter_vectors(self, chunk_rows: int = 8192):
        return self.table.iter_vectors(chunk_rows)

    def counts(self) -> dict:
        return self.table.counts()

    # -- search --------------------------------------------------------------------------

    @property
    def engine(self) -> FaissEngine:
        """The faiss engine for the rows as they are now: kept, loaded from vectors.faiss if
        that file is vouched for, else built from the table (and saved when possible)."""
        generation = self.table.generation
        if self._engine is not None and self._engine_generation == generation:
            return self._engine
        count = self.counts()["vectors"]
        wanted = self.settings.structure(count, self.manifest.dimension)
        path = os.path.join(self.location, VECTORS)
        engine = FaissEngine.load(path, self.table.get_meta(FAISS_RECORD), generation,
                                  self.manifest.dimension, self.settings)
        if engine is None or engine.structure != wanted:
            engine = self._build(count)
            self._save(engine, generation)
        self._engine, self._engine_generation = engine, generation
        return engine

    def _build(self, count: int) -> FaissEngine:
        return FaissEngine.build(self.manifest.dimension, self.settings, count,
                                 self.table.iter_vectors())

    def _save(self, engine: FaissEngine, generation: int) -> None:
        try:
            record = engine.save(os.path.join(self.location, VECTORS), generation)
            self.table.set_meta(FAISS_RECORD, record)
        except (OSError, sqlite3.OperationalError):
            pass  # a read-only index still answers; it rebuilds in memory next time too

    def search_ids(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.engine.search(queries, k)

    def _search_rows(self, queries: np.ndarray, k: int) -> list[list[Match]]:
        scores, ids = self.search_ids(queries, k)
        found = self.rows(np.unique(ids[ids >= 0]).tolist())
        return [[(float(s), found[i]) for s, i in zip(row_scores, row_ids) if i in found]
                for row_scores, row_ids in zip(scores, ids)]

    # -- flushing ------------------------------------------------------------------------

    def flush(self) -> None:
        """Save vectors.faiss for the rows as they are (restructured if the row count now
        calls for another kind) and the manifest's counts."""
        generation = self.table.generation
        record = self.table.get_meta(FAISS_RECORD) or {}
        counts = self.counts()
        wanted = self.settings.structure(counts["vectors"], self.manifest.dimension)
        if record.get("generation") != generation or record.get("structure") != wanted:
            engine = self._engine if (self._engine is not None
                                      and self._engine_generation == generation
                                      and self._engine.structure == wanted) else None
            engine = engine or self._build(counts["vectors"])
            self._save(engine, generation)
            self._engine, self._engine_generation = engine, generation
        if counts != self.manifest.counts:
            self.manifest.counts = counts
            try:
                self._write_manifest()
            except OSError:
                pass  # read-only: the counts are informational

    def _write_manifest(self) -> None:
        self.manifest.write(os.path.join(self.location, MANIFEST))
