"""An index folder's housekeeping: one creator at a time, and no temporary files left behind
by writers that were killed."""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Iterator

from ..fsutil import STRAY_AGE_SECONDS, remove_stray_temporaries

try:
    import fcntl
except ImportError:  # not POSIX: creation is not serialised, the rest works
    fcntl = None

log = logging.getLogger(__name__)


@contextlib.contextmanager
def folder_lock(folder: str) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` itself (no lock file: an index folder holds only
    the index); a second holder waits its turn. Released by the OS if the process dies."""
    if fcntl is None:
        yield
        return
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # also releases the lock


def clean_strays(folder: str, *, older_than: float = STRAY_AGE_SECONDS) -> int:
    """Remove the ``.tmp-`` files a killed writer left (fsutil.stray_temporaries) once they are
    old enough that no live writer can still be filling them. Returns how many went."""
    removed = len(remove_stray_temporaries(folder, older_than=older_than))
    if removed:
        log.info("removed %d temporary file%s left in %s by an interrupted writer", removed,
                 "" if removed == 1 else "s", folder)
    return removed
