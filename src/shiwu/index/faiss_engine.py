"""Embedded search with faiss-cpu: exact while that is fast enough, IVF above.

The engine is derived data: it is built from the rows, saved as one faiss file (faiss's own
format, no pickle) through a temporary file and ``os.replace``, and recorded with the table
generation it was built from and the file's SHA-256. A file whose record does not match, or
whose bytes do not hash to the record, is rebuilt, never handed to faiss: a damaged faiss
file can crash the reader instead of raising.

Defaults come from ``benchmarks/search.py`` on this project's 2-core machine (the numbers are
beside FLAT_MAX_VALUES, DEFAULT_NPROBE and SMALL_BATCH).
"""

from __future__ import annotations

import errno
import hashlib
import math
import os
from dataclasses import asdict, dataclass, fields, replace
from typing import Iterable

import numpy as np

from ..fsutil import atomic_output

faiss = None  # imported at the first engine: loading it costs a command that never searches ~75 ms

KINDS = ("auto", "flat", "ivf", "hnsw")
# auto: exact search while rows x dimension stays below this. Flat search reads every vector
# for every query: benchmarks/search.py measured one query on one thread at ~0.15-0.2 ms per
# million values (20k x 1280: 3.9 ms, 100k x 1280: 25 ms p50 on the busy 2-core machine), so
# 32M values (25k x 1280, 15.6k x 2048, 62k x 512 vectors) keep exact answers within ~6 ms,
# under the 10 ms goal with room for a busy machine. Above, IVF answered 100k at recall@10 0.98
# in 1 ms (nprobe 16).
FLAT_MAX_VALUES = 32_000_000
# Lists visited per query. benchmarks/search.py, 1280-d, one thread, load average ~4 on 2
# cores: 100k (512 lists) nprobe 16 -> recall@10 0.982 in 1.1 ms, 32 -> 0.995 in 2.1 ms;
# 1M (2048 lists) 16 -> 0.935 in 2.3 ms, 32 -> 0.986 in 7.9 ms, 64 -> 0.996 in 15 ms. 32 is
# the least that keeps recall@10 >= 0.95 at a million, within the 10 ms goal.
DEFAULT_NPROBE = 32
# 2 * sqrt(rows) lists trained on 40 vectors each: the 1M build took 260 s (k-means on 82k
# vectors, then 1M assignments), where 4 * sqrt(rows) with 64 each would be ~6x the k-means work
TRAIN_PER_LIST = 40  # faiss warns below 39
# Fewer queries than this run on one thread: on a shared 2-core machine OpenMP's hand-off
# cost a single 10k x 1280 query 16 ms on 2 threads against 1.8 ms on one (measured).
SMALL_BATCH = 20


def _require_faiss() -> None:
    global faiss
    if faiss is None:
        try:
            import faiss as module
        except ImportError:  # pragma: no cover - the message is the point
            raise ImportError("the local index needs faiss-cpu: pip install 'shiwu[index]'") from None
        faiss = module


@dataclass(frozen=True)
class FaissSettings:
    kind: str = "auto"
    flat_max_values: int = FLAT_MAX_VALUES
    nlist: int | None = None        # IVF lists; None: 2 * sqrt(rows), a power of two
    nprobe: int = DEFAULT_NPROBE    # IVF lists visited per query: recall against speed
    hnsw_m: int = 32                # HNSW links per node
    ef_construction: int = 40
    ef_search: int = 64             # HNSW candidates per query: recall against speed
    threads: int | None = None      # None: 1 for small query batches, else every core

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown faiss index kind {self.kind!r}: choose one of {KINDS}")
        # faiss aborts the whole process (no exception) on some of these, e.g. HNSW with M=0
        for name, low in (("hnsw_m", 2), ("nprobe", 1), ("ef_construction", 1), ("ef_search", 1),
                          ("nlist", 1), ("threads", 1), ("flat_max_values", 0)):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
                raise ValueError(f"faiss setting {name} must be an integer of at least {low}, not {value!r}")

    @classmethod
    def from_dict(cls, data: dict | None) -> "FaissSettings":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in known})

    def to_dict(self) -> dict:
        return asdict(self)

    def with_options(self, **options) -> "FaissSettings":
        return replace(self, **{k: v for k, v in options.items() if v is not None})

    def structure(self, rows: int, dimension: int) -> dict:
        """What to build for ``rows`` vectors: the parts that need a rebuild when they change
        (query-time parameters such as nprobe are applied to any built index)."""
        kind = self.kind
        if kind == "auto":
            kind = "flat" if rows * dimension <= self.flat_max_values else "ivf"
        if kind == "ivf":
            nlist = self.nlist or 2 ** round(math.log2(max(1.0, 2 * math.sqrt(rows))))
            nlist = max(1, min(nlist, rows // TRAIN_PER_LIST))
            if nlist <= 1:
                return {"kind": "flat"}  # too few rows to train lists: exact is also fastest
            return {"kind": "ivf", "nlist": nlist}
        if kind == "hnsw":
            return {"kind": "hnsw", "m": self.hnsw_m, "ef_construction": self.ef_construction}
        return {"kind": "flat"}


def _new_index(dimension: int, structure: dict):
    kind = structure["kind"]
    if kind == "ivf":
        description = f"IVF{structure['nlist']},Flat"  # IVF keeps ids itself and can remove
    elif kind == "hnsw":
        description = f"IDMap2,HNSW{structure['m']},Flat"
    else:
        description = "IDMap2,Flat"
    index = faiss.index_factory(dimension, description, faiss.METRIC_INNER_PRODUCT)
    if kind == "hnsw":
        faiss.downcast_index(index.index).hnsw.efConstruction = structure["ef_construction"]
    return index


class FaissEngine:
    """add / remove / search / count over one faiss index of int64 ids."""

    def __init__(self, dimension: int, settings: FaissSettings, structure: dict, index):
        self.dimension = dimension
        self.settings = settings
        self.structure = structure
        self.index = index
        self.apply_query_parameters(settings)

    @classmethod
    def build(cls, dimension: int, settings: FaissSettings, rows: int,
              chunks: Iterable[tuple[np.ndarray, np.ndarray]]) -> "FaissEngine":
        """Build from (ids, vectors) chunks holding ``rows`` vectors in all, in a fair order."""
        _require_faiss()
        structure = settings.structure(rows, dimension)
        index = _new_index(dimension, structure)
        pending: list[tuple[np.ndarray, np.ndarray]] = []
        wanted = structure.get("nlist", 0) * TRAIN_PER_LIST
        for ids, vectors in chunks:
            if index.is_trained:
                index.add_with_ids(vectors, ids)
                continue
            pending.append((ids, vectors))
            if sum(len(i) for i, _ in pending) >= wanted:
                cls._train_and_add(index, pending)
                pending = []
        if pending or not index.is_trained:
            cls._train_and_add(index, pending)
        return cls(dimension, settings, structure, index)

    @staticmethod
    def _train_and_add(index, pending) -> None:
        if not pending:
            return
        ids = np.concatenate([i for i, _ in pending])
        vectors = np.concatenate([v for _, v in pending])
        if not index.is_trained:
            index.train(vectors)
        index.add_with_ids(vectors, ids)

    @classmethod
    def from_vectors(cls, vectors: np.ndarray, ids: np.ndarray | None = None,
                     settings: FaissSettings | None = None) -> "FaissEngine":
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        ids = np.arange(len(vectors), dtype=np.int64) if ids is None else np.asarray(ids, np.int64)
        return cls.build(vectors.shape[1], settings or FaissSettings(kind="flat"), len(vectors),
                         [(ids, vectors)])

    def apply_query_parameters(self, settings: FaissSettings) -> None:
        self.settings = settings
        parameters = faiss.ParameterSpace()
        if self.structure["kind"] == "ivf":
            parameters.set_index_parameter(self.index, "nprobe", int(settings.nprobe))
        elif self.structure["kind"] == "hnsw":
            parameters.set_index_parameter(self.index, "efSearch", int(settings.ef_search))

    @property
    def count(self) -> int:
        return int(self.index.ntotal)

    @property
    def supports_remove(self) -> bool:
        return self.structure["kind"] != "hnsw"  # faiss's HNSW graph cannot drop nodes

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self.index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32),
                                np.asarray(ids, np.int64))

    def remove(self, ids: np.ndarray) -> int:
        if not self.supports_remove:
            raise NotImplementedError("faiss HNSW indexes cannot remove vectors: rebuild")
        return int(self.index.remove_ids(np.asarray(ids, np.int64)))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), both (len(queries), k), best first; id -1 where there are fewer."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        threads = self.settings.threads or (1 if len(queries) < SMALL_BATCH else os.cpu_count())
        faiss.omp_set_num_threads(int(threads))
        return self.index.search(queries, int(k))

    # -- the derived file ----------------------------------------------------------------

    def save(self, path: str | os.PathLike, generation: int) -> dict:
        """Write the index file atomically (fsutil.atomic_output); returns the record that
        vouches for it."""
        with atomic_output(path) as temporary:
            with open(temporary, "wb") as file:
                # through Python's file, not faiss's own fwrite: a full disk is then an OSError
                # naming the reason (ENOSPC), as every other write, not a RuntimeError quoting
                # faiss's C++ source line (which an index command cannot tell from a bug)
                try:
                    faiss.write_index(self.index, faiss.PyCallbackIOWriter(file.write))
                except RuntimeError as exc:
                    raise OSError(errno.EIO, f"faiss could not write {os.fspath(path)} "
                                             f"({_first_line(exc)})") from None
            digest = _sha256(temporary)
        return {"generation": generation, "sha256": digest, "structure": self.structure,
                "count": self.count}

    @classmethod
    def load(cls, path: str | os.PathLike, record: dict | None, generation: int,
             dimension: int, settings: FaissSettings) -> "FaissEngine | None":
        """The saved engine if ``record`` vouches for this file at this generation, else None."""
        _require_faiss()
        if not record or record.get("generation") != generation or not os.path.exists(path):
            return None
        structure = record.get("structure")
        if not isinstance(structure, dict) or structure.get("kind") not in ("flat", "ivf", "hnsw"):
            return None  # a damaged record vouches for nothing: rebuilt from the table
        if _sha256(path) != record.get("sha256"):
            return None
        index = faiss.read_index(os.fspath(path))
        if index.d != dimension or index.ntotal != record.get("count"):
            return None
        return cls(dimension, settings, record["structure"], index)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def _sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()
