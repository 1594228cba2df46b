"""What every index offers, whatever holds its rows: the operations the CLI and server call.

A subclass stores rows and answers nearest-neighbour queries (``local.LocalIndex``: SQLite +
faiss; ``milvus.MilvusIndex``: a Milvus collection); everything that only needs those, such as
the checks on vectors, resume and prune, lives here once.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from typing import Iterable, Iterator, Sequence

import numpy as np

from ..filenames import os_path
from .errors import IndexMismatchError
from .manifest import Manifest
from .rows import IndexRow, real_path, row_id

NORM_TOLERANCE = 1e-3  # float32 normalisation is good to ~1e-7; bf16 models normalise in fp32

Match = tuple[float, IndexRow]


class Index(ABC):
    location: str
    manifest: Manifest

    # -- what a store provides -----------------------------------------------------------

    @abstractmethod
    def _write(self, rows: list[IndexRow], vectors: list[np.ndarray | None]) -> None: ...

    @abstractmethod
    def _delete(self, ids: list[int]) -> int: ...

    @abstractmethod
    def _states(self, ids: list[int]) -> dict[int, tuple[int, int]]:
        """id -> (size, mtime_ns) for the stored rows among ``ids``."""

    @abstractmethod
    def search_ids(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), both (len(queries), k), best first, id -1 past the last match."""

    @abstractmethod
    def _search_rows(self, queries: np.ndarray, k: int) -> list[list[Match]]: ...

    @abstractmethod
    def rows(self, ids: Sequence[int]) -> dict[int, IndexRow]: ...

    @abstractmethod
    def all_rows(self) -> Iterator[IndexRow]: ...

    @abstractmethod
    def iter_vectors(self, chunk_rows: int = 8192) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids, vectors) chunks of every stored vector."""

    @abstractmethod
    def counts(self) -> dict:
        """{"rows": ..., "vectors": ..., "errors": ...} now."""

    def flush(self) -> None:
        """Make everything written so far durable in its final form (derived files too)."""

    def close(self) -> None:
        self.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __len__(self) -> int:
        return self.counts()["rows"]

    # -- the operations ------------------------------------------------------------------

    def upsert(self, rows: Sequence[IndexRow],
               vectors: np.ndarray | Sequence[np.ndarray | None] | None = None) -> None:
        """Add or replace ``rows`` (by real path) with one vector each. A row with an error has
        no vector: give None for it in a list, or any values in an array (they are ignored).
        The batch is one transaction: after a kill it is wholly there or wholly absent."""
        rows = list(rows)
        if vectors is None:
            vectors = [None] * len(rows)
        if len(vectors) != len(rows):
            raise ValueError(f"{len(rows)} rows but {len(vectors)} vectors")
        checked: list[np.ndarray | None] = []
        for row, vector in zip(rows, vectors):
            if not row.ok:
                checked.append(None)
            elif vector is None:
                raise ValueError(f"row {row.path!r} has no error and no vector")
            else:
                checked.append(vector)
        ok = [v for v in checked if v is not None]
        if ok:
            matrix = self._check_vectors(np.stack(ok))
            it = iter(matrix)
            checked = [None if v is None else next(it) for v in checked]
        # one file named twice in a batch: the last one wins, as it would across batches
        latest = {row.id: (row, vector) for row, vector in zip(rows, checked)}
        self._write([r for r, _ in latest.values()], [v for _, v in latest.values()])

    def remove(self, items: Iterable[int | str | os.PathLike]) -> int:
        """Remove rows given by id or by path (of any spelling); returns how many there were."""
        ids = [int(i) if isinstance(i, (int, np.integer)) else row_id(real_path(i)) for i in items]
        return self._delete(ids) if ids else 0

    def search(self, vectors: np.ndarray, k: int = 10) -> list[list[Match]]:
        """For each query vector (or the one given as (D,)), up to ``k`` (score, row), best first."""
        queries = self._check_vectors(vectors)
        if k < 1 or len(queries) == 0:
            return [[] for _ in queries]
        return self._search_rows(queries, k)

    def rows_needing(self, paths: Iterable[str | os.PathLike]) -> list[str]:
        """The paths (as given, each real file once) whose row is missing or stale: no row
        for their real path, or one recorded with another size or mtime. A file that cannot be
        stat'ed is listed too: embedding it gives its error row."""
        wanted: dict[int, tuple[str, tuple[int, int] | None]] = {}
        for path in paths:
            real = real_path(path)
            identity = row_id(real)
            if identity in wanted:
                continue
            try:
                stat = os.stat(os_path(real))
                state = (stat.st_size, stat.st_mtime_ns)
            except OSError:
                state = None
            wanted[identity] = (os.fspath(path), state)
        stored = self._states(list(wanted))
        return [path for identity, (path, state) in wanted.items()
                if state is None or stored.get(identity) != state]

    def prune(self, existing_paths: Iterable[str | os.PathLike] | None = None) -> int:
        """Drop rows whose file is gone: not among ``existing_paths`` (any spelling) when they
        are given, else no longer on disk. Returns how many rows were dropped."""
        if existing_paths is None:
            gone = [row.id for row in self.all_rows() if not os.path.exists(row.os_path)]
        else:
            keep = {row_id(real_path(p)) for p in existing_paths}
            gone = [row.id for row in self.all_rows() if row.id not in keep]
        return self._delete(gone) if gone else 0

    # -- checks --------------------------------------------------------------------------

    def _check_vectors(self, vectors) -> np.ndarray:
        matrix = np.asarray(vectors, dtype=np.float32)
        if matrix.ndim == 1:
            matrix = matrix[None, :]
        if matrix.ndim != 2 or matrix.shape[1] != self.manifest.dimension:
            shape = "x".join(map(str, np.shape(vectors)))
            raise IndexMismatchError(
                f"index {self.location} holds {self.manifest.dimension}-d vectors of model "
                f"{self.manifest.model!r}; these are {shape}: use the same model as the index")
        if len(matrix):
            norms = np.linalg.norm(matrix, axis=1)
            if not np.all(np.isfinite(norms)) or np.any(np.abs(norms - 1) > NORM_TOLERANCE):
                bad = int(np.flatnonzero(~(np.abs(norms - 1) <= NORM_TOLERANCE))[0])
                raise ValueError(f"vector {bad} has norm {norms[bad]:.4f}: index vectors must "
                                 "be L2-normalised embeddings (Recognizer.embed returns them)")
        return np.ascontiguousarray(matrix)
