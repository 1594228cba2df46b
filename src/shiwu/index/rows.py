"""One indexed image: where it is, what shiwu said about it, and its identity.

The identity of a row is the file's resolved real path (symlinks and ``..`` resolved), so the
same photo named two ways is indexed once. Its id is a 63-bit hash of that real path: the same
file gets the same id in every store and every run, which makes an upsert idempotent (a resumed
run after kill -9 rewrites rows instead of duplicating them) without a lookup first. Two real
paths share an id with probability n^2 / 2^64, about 5e-8 for a million photos.

A name that is not UTF-8 is stored in two forms (see ``shiwu.filenames``): ``path`` readable,
``real_path`` lossless (a ``file://`` URI of its bytes); ``os_path`` is the name to open.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass

from ..filenames import lossless, os_path, readable


def real_path(path: str | os.PathLike) -> str:
    """The identity of a file: its resolved real path, as lossless text."""
    return lossless(os.path.realpath(os.fspath(path)))


def row_id(real: str) -> int:
    """The id of the row whose real path is ``real`` (see ``real_path``): a hash of the OS's
    bytes, so an id is the same whichever form the path is written in."""
    digest = hashlib.blake2b(os.fsencode(os_path(real)), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1  # non-negative int64: faiss and Milvus keys


@dataclass(frozen=True)
class IndexRow:
    path: str                 # as the user spelled it (shown back to them)
    real_path: str            # the identity
    size: int                 # bytes, with mtime_ns what tells a changed file (resume)
    mtime_ns: int
    model: str = ""
    label: str | None = None  # top-1 label and its score, when the model has labels
    score: float | None = None
    error_type: str | None = None  # a file that could not be embedded: a row, with no vector
    error_message: str | None = None

    @property
    def id(self) -> int:
        return row_id(self.real_path)

    @property
    def os_path(self) -> str:
        """The real path as the OS takes it (to open or stat the file)."""
        return os_path(self.real_path)

    @property
    def ok(self) -> bool:
        return self.error_type is None

    @classmethod
    def for_file(cls, path: str | os.PathLike, *, model: str = "", label: str | None = None,
                 score: float | None = None, error_type: str | None = None,
                 error_message: str | None = None) -> "IndexRow":
        """The row for a file on disk now (raises OSError if it cannot be stat'ed)."""
        stat = os.stat(path)
        return cls(readable(os.fspath(path)), real_path(path), stat.st_size, stat.st_mtime_ns, model,
                   label, None if score is None else float(score), error_type,
                   None if error_message is None else readable(error_message))

    def to_dict(self) -> dict:
        return {"id": self.id, **asdict(self)}


FIELDS = tuple(IndexRow.__dataclass_fields__)
