"""The manifest: what an index's vectors mean, so that no two kinds are ever mixed.

A local index keeps it as ``manifest.json`` in its folder (and the same identity inside its
SQLite table, so that a manifest copied from another index is caught); a Milvus collection keeps
it as the collection's description. ``counts`` is informational, as of the last flush: the table
itself is the truth.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields

from ..fsutil import atomic_write
from .errors import IndexFormatError, IndexMismatchError

FORMAT = "shiwu-index"
FORMAT_VERSION = 1
METRIC = "cosine"  # inner product of L2-normalised vectors


@dataclass
class Manifest:
    model: str
    dimension: int
    weights_hash: str = ""   # two builds of a model with different weights embed differently
    metric: str = METRIC
    engine: dict = field(default_factory=dict)  # search engine settings (see faiss_engine)
    model_ref: dict = field(default_factory=dict)  # how to rebuild the model (ModelRef.to_dict)
    counts: dict = field(default_factory=dict)  # rows, vectors, errors
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    def __post_init__(self):
        self.dimension = int(self.dimension)
        if self.dimension <= 0:
            raise ValueError(f"an index needs a positive dimension, not {self.dimension}")

    def identity(self) -> dict:
        """What must be equal for two sets of vectors to be comparable."""
        return {"model": self.model, "weights_hash": self.weights_hash,
                "dimension": self.dimension, "metric": self.metric}

    def check_compatible(self, where: str, *, model: str | None = None,
                         dimension: int | None = None, weights_hash: str | None = None) -> None:
        """Raise IndexMismatchError if vectors of ``model``/``dimension``/``weights_hash`` (the
        ones given) cannot go into or be searched in this index."""
        problems = []
        if model is not None and model != self.model:
            problems.append(f"model {self.model!r}, not {model!r}")
        if dimension is not None and int(dimension) != self.dimension:
            problems.append(f"{self.dimension}-d vectors, not {int(dimension)}-d")
        if weights_hash and self.weights_hash and weights_hash != self.weights_hash:
            problems.append(f"weights {self.weights_hash[:16]}..., not {weights_hash[:16]}...")
        if problems:
            raise IndexMismatchError(
                f"index {where} was built with {'; '.join(problems)}: its scores would mean "
                f"nothing for these vectors. Use --model {self.model} with it, or build a new "
                "index for this model (another --out folder or collection).")

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes, where: str) -> "Manifest":
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise IndexFormatError(f"the manifest of index {where} is corrupt ({exc}): rebuild "
                                   "the index with `shiwu index ... --out` into a new folder") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise IndexFormatError(f"{where} is not a shiwu index (its manifest is not one)")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            newer = isinstance(version, int) and version > FORMAT_VERSION
            advice = ("upgrade shiwu (pip install -U shiwu)" if newer else
                      "rebuild it with this shiwu (`shiwu index ... --out` a new folder)")
            raise IndexFormatError(f"index {where} has format version {version!r}; this shiwu "
                                   f"reads version {FORMAT_VERSION}: {advice}")
        known = {f.name for f in fields(cls)}
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except (TypeError, ValueError) as exc:
            raise IndexFormatError(f"the manifest of index {where} is corrupt ({exc}): rebuild "
                                   "the index into a new folder") from None

    @classmethod
    def read(cls, path: str | os.PathLike, where: str) -> "Manifest":
        with open(path, "rb") as file:
            return cls.from_json(file.read(), where)

    def write(self, path: str | os.PathLike) -> None:
        write_atomically(path, self.to_json().encode("utf-8"))


def write_atomically(path: str | os.PathLike, data: bytes) -> None:
    """Readers see the old file or the new one, never a half-written one, even after kill -9
    (the project's one temp-file + fsync + rename: ``fsutil.atomic_write``)."""
    atomic_write(path, data)
