"""The rows of a local index: one SQLite table, the truth from which everything else is derived.

SQLite (standard library) gives what an index folder needs without code of our own: every
upsert or removal is one transaction, so a kill -9 at any moment leaves the table as it was
before or after that batch, never in between (WAL journal; ``synchronous=NORMAL`` is safe
against a killed process, and only a power cut can lose the last transactions, never
consistency). Readers in other processes (``shiwu serve``) see committed batches while a
writer goes on.

Vectors are float32 little-endian BLOBs in the same row as their metadata, so a row and its
vector can never disagree. Each write transaction bumps ``generation`` in the ``meta`` table:
derived files (the faiss index) are tagged with the generation they were built from, and one
with another generation is stale.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import urllib.parse
from typing import Iterable, Iterator, Sequence

import numpy as np

from .errors import IndexFormatError
from .manifest import FORMAT_VERSION
from .rows import FIELDS, IndexRow

APPLICATION_ID = 0x73687775  # "shwu": `file` and sqlite3 tell our table from any other
VECTOR_DTYPE = np.dtype("<f4")
QUERY_CHUNK = 900  # under SQLite's default limit of host parameters per statement

SCHEMA = """
CREATE TABLE images (
    id INTEGER PRIMARY KEY,      -- rows.row_id(real_path)
    path TEXT NOT NULL,
    real_path TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    model TEXT NOT NULL,
    label TEXT,
    score REAL,
    error_type TEXT,
    error_message TEXT,
    vector BLOB                  -- float32 little-endian, NULL for an image that failed
);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
COLUMNS = ", ".join(FIELDS)


def _writable(path: str) -> bool:
    """Whether this process can write the table and make files beside it (WAL's -wal, -shm)."""
    folder = os.path.dirname(os.path.abspath(path))
    return os.access(folder, os.W_OK) and os.access(path, os.W_OK)


def _open_read_only(path: str) -> sqlite3.Connection:
    """The table opened for reading only. ``mode=ro`` still needs WAL's -shm file beside the
    table (made if missing); where that cannot be made either (a read-only mount of an index
    closed cleanly, which leaves no -wal or -shm), ``immutable=1``: SQLite then reads the file
    without locks, which is right for a medium nobody writes."""
    uri = "file:" + urllib.parse.quote(os.fsencode(os.path.abspath(path)))
    try:
        return _connect(f"{uri}?mode=ro")
    except sqlite3.OperationalError:  # "unable to open database file": no -shm can be made
        return _connect(f"{uri}?mode=ro&immutable=1")


def _connect(uri: str) -> sqlite3.Connection:
    """A connection to ``uri`` that has read the schema (a URI's problems show at the first read)."""
    db = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=60, check_same_thread=False)
    try:
        db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
    except BaseException:
        db.close()
        raise
    return db


class SqliteTable:
    def __init__(self, path: str | os.PathLike, dimension: int, *, create: bool = False,
                 identity: dict | None = None):
        self.path = os.fspath(path)
        self.dimension = dimension
        if not create and not os.path.exists(self.path):
            raise IndexFormatError(f"index table {self.path} is missing: the folder is not a "
                                   "complete index; rebuild it with `shiwu index ... --out`")
        # a folder this process cannot write (a read-only mount, a snapshot, someone else's
        # files) is still an index to search: opened read-only, never asked to change to WAL;
        # so is one on a full disk, where WAL's -shm file cannot be made. A write to either is
        # refused with why (``transaction``): the error a writer would have had.
        self.cannot_write: str | None = None
        if not create and not _writable(self.path):
            self.cannot_write = "attempt to write a readonly database"
        with self._errors():
            if self.cannot_write is not None:
                self.db = _open_read_only(self.path)
            else:
                self.db = self._open_for_writing(create)
                if self.db is None:
                    try:
                        self.db = _open_read_only(self.path)
                    except sqlite3.OperationalError:  # unreadable too: the first reason is the one
                        raise sqlite3.OperationalError(self.cannot_write) from None
            if create:
                with self.transaction(bump=False):
                    for statement in SCHEMA.split(";"):
                        if statement.strip():
                            self.db.execute(statement)
                    self.db.execute(f"PRAGMA application_id={APPLICATION_ID}")
                    self.db.execute(f"PRAGMA user_version={FORMAT_VERSION}")
                    self._set("generation", "0")
                    self._set("identity", json.dumps(identity or {}, sort_keys=True))
            self._check()

    # -- opening and errors --------------------------------------------------------------

    @property
    def read_only(self) -> bool:
        return self.cannot_write is not None

    def _open_for_writing(self, create: bool) -> sqlite3.Connection | None:
        """The table in WAL mode; None (and ``cannot_write`` set) when an existing table cannot
        be opened so but may still be read (a full disk: "disk I/O error")."""
        # isolation_level=None: transactions are ours (BEGIN IMMEDIATE), not the module's
        db = sqlite3.connect(self.path, isolation_level=None, timeout=60, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.OperationalError as exc:
            db.close()
            if create or "locked" in str(exc):
                raise
            self.cannot_write = str(exc)
            return None
        return db

    @contextlib.contextmanager
    def _errors(self):
        try:
            yield
        except sqlite3.DatabaseError as exc:
            # OperationalError is about this moment (locked, read-only, disk full), not damage;
            # a missing table in a file stamped as ours is damage
            if isinstance(exc, sqlite3.OperationalError) and "no such table" not in str(exc):
                raise
            raise IndexFormatError(
                f"index table {self.path} is corrupt or unreadable ({exc}): rebuild the index "
                "with `shiwu index ... --out` into a new folder") from None

    def _check(self) -> None:
        application_id = self.db.execute("PRAGMA application_id").fetchone()[0]
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if application_id != APPLICATION_ID:
            raise IndexFormatError(f"{self.path} is an SQLite file but not a shiwu index table")
        if version != FORMAT_VERSION:
            raise IndexFormatError(f"index table {self.path} has format version {version}; this "
                                   f"shiwu reads {FORMAT_VERSION}: rebuild it or upgrade shiwu")
        self.generation  # noqa: B018 - a damaged generation is refused at open, not mid-search

    def identity(self) -> dict:
        with self._errors():
            text = self._get("identity") or "{}"
        try:
            identity = json.loads(text)
        except ValueError:
            identity = None
        if not isinstance(identity, dict):
            raise IndexFormatError(f"index table {self.path} has a damaged identity record: "
                                   "rebuild the index with `shiwu index ... --out` into a new folder")
        return identity

    def close(self) -> None:
        self.db.close()

    # -- meta ----------------------------------------------------------------------------

    def _get(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def _set(self, key: str, value: str) -> None:
        self.db.execute("INSERT INTO meta (key, value) VALUES (?, ?) "
                        "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))

    def get_meta(self, key: str) -> dict | None:
        """A derived file's record; a damaged one is no record (the file is rebuilt)."""
        with self._errors():
            value = self._get(key)
        try:
            record = None if value is None else json.loads(value)
        except ValueError:
            return None
        return record if isinstance(record, dict) else None

    def set_meta(self, key: str, value: dict) -> None:
        """A derived file's record: not a change of the rows, so the generation stays."""
        with self.transaction(bump=False):
            self._set(key, json.dumps(value, sort_keys=True))

    @property
    def generation(self) -> int:
        with self._errors():
            value = self._get("generation")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise IndexFormatError(f"index table {self.path} has a damaged generation record "
                                   f"({value!r}): rebuild the index into a new folder") from None

    @contextlib.contextmanager
    def transaction(self, *, bump: bool = True):
        # IMMEDIATE takes the write lock up front: two writers queue instead of deadlocking
        with self._errors():
            if self.cannot_write is not None:
                raise sqlite3.OperationalError(self.cannot_write)
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield
                if bump:
                    self.db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 "
                                    "WHERE key = 'generation'")
                self.db.execute("COMMIT")
            except BaseException:
                # SQLite has already rolled back by itself after some errors (a disk I/O error
                # from a full disk): a second ROLLBACK would hide the real error
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                raise

    # -- rows ----------------------------------------------------------------------------

    def upsert(self, rows: Sequence[IndexRow], vectors: Sequence[np.ndarray | None]) -> None:
        records = []
        for row, vector in zip(rows, vectors, strict=True):
            blob = None if vector is None else np.asarray(vector, VECTOR_DTYPE).tobytes()
            records.append((row.id, row.path, row.real_path, row.size, row.mtime_ns, row.model,
                            row.label, row.score, row.error_type, row.error_message, blob))
        updates = ", ".join(f"{name} = excluded.{name}" for name in (*FIELDS, "vector"))
        with self.transaction():
            self.db.executemany(
                f"INSERT INTO images (id, {COLUMNS}, vector) VALUES ({', '.join('?' * (len(FIELDS) + 2))}) "
                f"ON CONFLICT(id) DO UPDATE SET {updates}", records)

    def remove(self, ids: Iterable[int]) -> int:
        ids = [int(i) for i in ids]
        removed = 0
        with self.transaction():
            for start in range(0, len(ids), QUERY_CHUNK):
                chunk = ids[start:start + QUERY_CHUNK]
                cursor = self.db.execute(
                    f"DELETE FROM images WHERE id IN ({', '.join('?' * len(chunk))})", chunk)
                removed += cursor.rowcount
        return removed

    def _select(self, columns: str, ids: Sequence[int]) -> Iterator[tuple]:
        ids = [int(i) for i in ids]
        with self._errors():
            for start in range(0, len(ids), QUERY_CHUNK):
                chunk = ids[start:start + QUERY_CHUNK]
                yield from self.db.execute(f"SELECT {columns} FROM images WHERE id IN "
                                           f"({', '.join('?' * len(chunk))})", chunk)

    def rows(self, ids: Sequence[int]) -> dict[int, IndexRow]:
        return {record[0]: IndexRow(*record[1:]) for record in self._select(f"id, {COLUMNS}", ids)}

    def states(self, ids: Sequence[int]) -> dict[int, tuple[int, int]]:
        """id -> (size, mtime_ns) of the stored rows among ``ids``."""
        return {i: (size, mtime) for i, size, mtime in self._select("id, size, mtime_ns", ids)}

    def all_rows(self) -> Iterator[IndexRow]:
        with self._errors():
            for record in self.db.execute(f"SELECT {COLUMNS} FROM images ORDER BY id"):
                yield IndexRow(*record)

    def counts(self) -> dict:
        with self._errors():
            rows, vectors = self.db.execute(
                "SELECT COUNT(*), COUNT(vector) FROM images").fetchone()
        return {"rows": rows, "vectors": vectors, "errors": rows - vectors}

    def iter_vectors(self, chunk_rows: int = 8192) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids, vectors) chunks of every stored vector, in id order: a hash of the real path,
        so any prefix is a fair sample of the whole (what IVF training needs)."""
        with self._errors():
            cursor = self.db.execute(
                "SELECT id, vector FROM images WHERE vector IS NOT NULL ORDER BY id")
            while records := cursor.fetchmany(chunk_rows):
                ids = np.fromiter((r[0] for r in records), np.int64, len(records))
                flat = np.frombuffer(b"".join(r[1] for r in records), VECTOR_DTYPE)
                if flat.size != len(records) * self.dimension:
                    raise IndexFormatError(
                        f"index table {self.path} holds vectors that are not "
                        f"{self.dimension}-d: it is corrupt; rebuild the index")
                yield ids, flat.reshape(len(records), self.dimension).astype(np.float32)
