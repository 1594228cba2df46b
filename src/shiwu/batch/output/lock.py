"""One writer per results file: an exclusive, non-blocking ``flock`` held while the file is
open (released by the OS when the process dies, so a kill -9 never leaves a stale lock)."""

from __future__ import annotations

from pathlib import Path

from .errors import OutputError

try:
    import fcntl
except ImportError:  # not POSIX: no lock, the rest works
    fcntl = None


def lock_exclusively(handle, path: Path) -> None:
    """Lock the open file ``handle`` or close it and raise OutputError: another run has it."""
    if fcntl is None:
        return
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise OutputError(f"another shiwu batch is writing {path}; wait for it or choose another "
                          "--out") from None
