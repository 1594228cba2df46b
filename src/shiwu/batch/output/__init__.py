"""Result files for ``shiwu batch``: JSON Lines, CSV or Parquet, chosen by the file extension.

Every writer appends the rows of each batch and flushes them before the next batch starts, so a
run killed at any moment loses at most the batch in flight. Opening with ``resume=True`` reads
back which images are already done, and cuts off an incomplete last row that a kill left behind,
so the resumed run adds exactly the missing rows.

One module per format (``jsonl``, ``csvfile``, ``parquet``), all built on the same parts:
``schema`` (the columns), ``resume`` (the row key and what a file already holds),
``appendfile`` (the append-only file type) and ``lock`` (one writer per file).
"""

from __future__ import annotations

import os
from pathlib import Path

from ...fsutil import cannot_write
from .csvfile import CsvWriter
from .errors import OutputError, OutputWriteError
from .jsonl import JsonlWriter
from .parquet import ParquetWriter
from .resume import row_key
from .schema import PATH_COLUMN, columns, flatten, parquet_schema

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
WRITERS = {"jsonl": JsonlWriter, "csv": CsvWriter, "parquet": ParquetWriter}

__all__ = ["open_writer", "output_format", "columns", "flatten", "parquet_schema", "row_key",
           "OutputError", "OutputWriteError", "PATH_COLUMN", "FORMATS"]


def output_format(path: str | os.PathLike) -> str:
    suffix = Path(path).suffix.lower()
    try:
        return FORMATS[suffix]
    except KeyError:
        raise OutputError(f"cannot tell the output format of {os.fspath(path)!r}: "
                          "name it .jsonl, .csv or .parquet") from None


def _writable(path: Path) -> None:
    """Refuse, before anything is decoded, an output that cannot be written: the file itself if
    it exists, and its folder (new files, the Parquet journal and temporary files live there).
    The same check as every command's output (``fsutil.cannot_write``)."""
    problem = cannot_write(path)
    if problem:
        raise OutputError(f"cannot write {path}: {problem}")


def open_writer(path: str | os.PathLike, *, topk: int, resume: bool = False,
                overwrite: bool = False, model: str | None = None):
    """A writer for ``path``; ``writer.done`` holds the identities (``image_key``) of the images
    already in it (after resume), ``writer.failed`` those of its rows with an error.

    Without ``resume`` or ``overwrite``, an existing non-empty output is an error: a finished
    million-image run should not disappear because a command was repeated.
    """
    if resume and overwrite:
        raise OutputError("--resume and --overwrite contradict each other; choose one")
    kind = output_format(path)
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path} is a folder; give a file name for the results")
    _writable(path)  # a missing folder too: "cannot write PATH: the folder … does not exist"
    writer = WRITERS[kind](path, topk=topk, resume=resume, overwrite=overwrite)
    if model is not None and writer.models and model not in writer.models:
        writer.close()
        raise OutputError(f"{path} holds results of model {', '.join(sorted(writer.models))}, "
                          f"not {model}; resume with the same --model or write a new file")
    return writer
