"""The manifest: what an index's vectors mean, so that no two kinds are ever mixed.

A local index keeps it as ``manifest.json`` in its folder (and the same identity inside its
SQLite table, so that a manifest copied from another index is caught); a Milvus collection keeps
it as the collection's description. ``counts`` is informational, as of the last flush: the table
itself is the truth.

A manifest is data from a file anyone may have edited: it is read from a regular file only, at
most ``MAX_MANIFEST_BYTES``, and validated against a schema (``manifest_schema``) before any
value is used; a bad one is one ``IndexFormatError`` line. It never grants anything: a
``trust_model_code`` in its ``model_ref`` is dropped (trust comes from the person at the
command line or the API caller, never from a file).
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import asdict, dataclass, field

from ..fsutil import atomic_write
from .errors import IndexFormatError, IndexMismatchError

FORMAT = "shiwu-index"
FORMAT_VERSION = 1
METRIC = "cosine"  # inner product of L2-normalised vectors
MAX_MANIFEST_BYTES = 1 << 20  # a real one is ~1 KB; /dev/zero or a huge file is not one
UNTRUSTED_KEYS = ("trust_model_code",)  # never taken from a file


@dataclass
class Manifest:
    model: str
    dimension: int
    weights_hash: str = ""   # two builds of a model with different weights embed differently
    metric: str = METRIC
    engine: dict = field(default_factory=dict)  # search engine settings (see faiss_engine)
    model_ref: dict = field(default_factory=dict)  # how to rebuild the model (ModelRef.to_dict)
    counts: dict = field(default_factory=dict)  # rows, vectors, errors
    # what else changes a vector: the input size and the rest of the preprocessing, and the
    # numeric precision. Empty in indexes made before they were recorded (then not checked).
    preprocessing: dict = field(default_factory=dict)
    precision: str = ""
    # the runtime that made the vectors: int8 and bf16 vectors are its own (index.made_with).
    # Not part of identity(): fp32 vectors agree across runtimes, and an older shiwu must still
    # open a newer index.
    backend: str = ""
    # int8 only: the quantizer recipe of the model that made the vectors (runtimes.INT8_RECIPES).
    # A later shiwu quantizes another way: its vectors are close to these, not equal (made_with).
    int8_recipe: str = ""
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    def __post_init__(self):
        self.dimension = int(self.dimension)
        if self.dimension <= 0:
            raise ValueError(f"an index needs a positive dimension, not {self.dimension}")
        self.model_ref = {k: v for k, v in (self.model_ref or {}).items() if k not in UNTRUSTED_KEYS}

    def identity(self) -> dict:
        """What must be equal for two sets of vectors to be comparable (the preprocessing and
        precision only once recorded, so indexes made before still open)."""
        identity = {"model": self.model, "weights_hash": self.weights_hash,
                    "dimension": self.dimension, "metric": self.metric}
        if self.preprocessing:
            identity["preprocessing"] = self.preprocessing
        if self.precision:
            identity["precision"] = self.precision
        return identity

    def check_compatible(self, where: str, *, model: str | None = None,
                         dimension: int | None = None, weights_hash: str | None = None,
                         preprocessing: dict | None = None, precision: str | None = None) -> None:
        """Raise IndexMismatchError if vectors made as given (the arguments not None) cannot go
        into or be searched in this index."""
        problems = []
        if model is not None and model != self.model:
            problems.append(f"model {self.model!r}, not {model!r}")
        if dimension is not None and int(dimension) != self.dimension:
            problems.append(f"{self.dimension}-d vectors, not {int(dimension)}-d")
        if weights_hash and self.weights_hash and weights_hash != self.weights_hash:
            problems.append(f"weights {self.weights_hash[:16]}..., not {weights_hash[:16]}...")
        if preprocessing and self.preprocessing and preprocessing != self.preprocessing:
            problems.append(describe_difference(self.preprocessing, preprocessing))
        if precision and self.precision and precision != self.precision:
            problems.append(f"precision {self.precision}, not {precision}")
        if problems:
            advice = (f"Use --model {self.model}" if model is not None and model != self.model
                      else "Use the settings it was built with")
            raise IndexMismatchError(
                f"index {where} was built with {'; '.join(problems)}: its scores would mean "
                f"nothing for these vectors. {advice}, or build a new index (another --out "
                "folder or collection).")

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes, where: str) -> "Manifest":
        from pydantic import ValidationError

        from .manifest_schema import ManifestFile

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
        try:
            checked = ManifestFile.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            place = ".".join(str(p) for p in first["loc"]) or "manifest"
            raise IndexFormatError(f"the manifest of index {where} is damaged ({place}: "
                                   f"{first['msg']}): rebuild the index into a new folder") from None
        return cls(**checked.model_dump())

    @classmethod
    def read(cls, path: str | os.PathLike, where: str) -> "Manifest":
        return cls.from_json(read_regular_file(path, MAX_MANIFEST_BYTES, f"the manifest of index {where}"), where)

    def write(self, path: str | os.PathLike) -> None:
        atomic_write(path, self.to_json().encode("utf-8"))


def describe_difference(built: dict, given: dict) -> str:
    """``input size 224, not 96`` and the like, for the preprocessing values that differ."""
    names = {"size": "input size"}
    parts = [f"{names.get(k, k)} {built.get(k)}, not {given.get(k)}"
             for k in sorted(set(built) | set(given)) if built.get(k) != given.get(k)]
    return "; ".join(parts) or "other preprocessing"


def read_regular_file(path: str | os.PathLike, limit: int, what: str) -> bytes:
    """The bytes of ``path`` if it is a regular file of at most ``limit`` bytes; else one
    IndexFormatError line. O_NONBLOCK: opening a FIFO must not wait for a writer."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise IndexFormatError(f"cannot read {what} ({os.fspath(path)}): "
                               f"{exc.strerror or exc}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise IndexFormatError(f"{what} ({os.fspath(path)}) is not a regular file: rebuild "
                                   "the index into a new folder")
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 16, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise IndexFormatError(f"{what} ({os.fspath(path)}) is over {limit} bytes: it is not "
                                   "a manifest; rebuild the index into a new folder")
        return b"".join(chunks)
    except OSError as exc:
        raise IndexFormatError(f"cannot read {what} ({os.fspath(path)}): {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def write_atomically(path: str | os.PathLike, data: bytes) -> None:
    """Readers see the old file or the new one, never a half-written one, even after kill -9
    (the project's one temp-file + fsync + rename: ``fsutil.atomic_write``)."""
    atomic_write(path, data)
