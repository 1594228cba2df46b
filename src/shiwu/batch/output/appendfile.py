"""The one file type every results format writes through: append-only, locked, each write
whole rows or nothing, a damaged tail (from a kill) cut off on resume."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable

from ...fsutil import atomic_output, stray_temporaries
from .errors import OutputError, OutputWriteError
from .lock import lock_exclusively

log = logging.getLogger(__name__)


def exists_nonempty(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except OSError:
        return False


def refuse_existing(path: Path, *, resume: bool, overwrite: bool, what: str = "") -> None:
    """A finished million-image run must not disappear because a command was repeated."""
    if exists_nonempty(path) and not (resume or overwrite):
        raise OutputError(f"{path} already exists{what}: add --resume to continue it, "
                          "or --overwrite to start again")


def remove_stale_temporaries(path: Path) -> None:
    """The temporary files (fsutil's ``.tmp-*-NAME``, and the ``.NAME.PID.tmp`` of earlier
    versions) of a run killed while rewriting ``path``. Called with the lock held, so no live
    run is writing them."""
    for stale in stray_temporaries(path.parent, of=path.name):
        stale.unlink(missing_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        stale.unlink(missing_ok=True)


class AppendFile:
    """An append-only, locked file whose damaged tail (from a kill) is cut off on resume."""

    def __init__(self, path: Path, *, resume: bool, overwrite: bool, what: str = "", output: Path | None = None):
        """``output``: the file the user named, when ``path`` is a journal written for it (said
        when another run holds the lock)."""
        self.path = path
        refuse_existing(path, resume=resume, overwrite=overwrite, what=what)
        existed = path.exists()
        try:
            # unbuffered: a failed write (disk full) leaves nothing in a buffer that close()
            # would try to write again
            self.handle = open(path, "a+b", buffering=0)
        except OSError as exc:
            raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
        lock_exclusively(self.handle, output or path)
        remove_stale_temporaries(path)
        # --overwrite empties the file at the first write, not now: if the run never gets that
        # far (the model failed to load, Ctrl-C during start-up), the old results stay.
        self.truncate_first = overwrite
        # A file that starts out empty and gets no row is removed again on close, so it does
        # not stand in the way of the next run.
        self.fresh = not existed or os.fstat(self.handle.fileno()).st_size == 0
        self.rows_written = 0

    @property
    def empty(self) -> bool:
        """Whether the next write starts the file (so a CSV header goes first)."""
        return self.truncate_first or os.fstat(self.handle.fileno()).st_size == 0

    def write(self, data: bytes, rows: int = 0) -> None:
        """Append ``data`` (whole rows) or nothing: a write that fails half-way (disk full,
        RLIMIT_FSIZE) is cut back off, so the file still ends on a complete row."""
        if self.truncate_first:
            self.handle.truncate(0)
            self.truncate_first = False
        start = os.fstat(self.handle.fileno()).st_size
        try:
            _write_all(self.handle, data)
        except OSError as exc:
            try:
                self.handle.truncate(start)
            except OSError:
                pass  # resume cuts a torn last row anyway
            raise OutputWriteError(self.path, exc) from None
        self.rows_written += rows

    def replace_with(self, chunks: Iterable[bytes]) -> None:
        """Replace the whole file by ``chunks`` (fsutil.atomic_output: a kill at any moment
        leaves the old file or the new one). The new file is locked before it is renamed into
        place, so no other run can take it in between."""
        handle = None
        try:
            with atomic_output(self.path) as temporary:
                handle = open(temporary, "r+b", buffering=0)
                lock_exclusively(handle, temporary)
                for chunk in chunks:
                    _write_all(handle, chunk)
        except OSError as exc:
            if handle is not None:
                handle.close()
            raise OutputWriteError(self.path, exc) from None
        old, self.handle = self.handle, handle
        old.close()
        self.handle.seek(0, os.SEEK_END)

    def cut(self, offset: int) -> None:
        size = os.fstat(self.handle.fileno()).st_size
        if offset < size:
            log.info("dropped an incomplete last row of %s (%d bytes) left by an interrupted run",
                     self.path, size - offset)
            self.handle.truncate(offset)

    @property
    def unused(self) -> bool:
        return self.fresh and not self.rows_written

    def close(self) -> None:
        if self.handle.closed:
            return
        if self.unused:
            self.path.unlink(missing_ok=True)  # still locked: nobody else is using it
            self.handle.close()
            return
        try:
            os.fsync(self.handle.fileno())
        except OSError:
            pass
        self.handle.close()  # also releases the lock


def _write_all(handle, data: bytes) -> None:
    view = memoryview(data)
    while view:  # each batch reaches the OS before the next one starts
        view = view[handle.write(view):]
