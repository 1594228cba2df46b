"""What can go wrong with a results file: before the run (``OutputError``) or during it
(``OutputWriteError``)."""

from __future__ import annotations

import errno
import os


class OutputError(ValueError):
    """The output file cannot be used as asked (wrong extension, exists, locked, mismatched,
    not writable). Raised before any image is decoded."""


class OutputWriteError(OutputError):
    """Writing rows failed in the middle of a run (disk full, file too large, I/O error).

    The rows written before stay intact (a half-written batch is cut off again), so the same
    command with ``--resume`` continues once the cause is fixed."""

    def __init__(self, path, exc: BaseException):
        self.path = os.fspath(path)
        code = getattr(exc, "errno", None)
        if code in (errno.ENOSPC, errno.EDQUOT):
            reason = "no space left on the device"
        elif code == errno.EFBIG or "too large" in str(exc).lower():
            reason = "file too large (the file size limit of this system or process)"
        else:
            reason = getattr(exc, "strerror", None) or str(exc)
        self.reason = reason
        super().__init__(f"cannot write {self.path}: {reason}. The rows written before are intact; "
                         "make room, then run the same command with --resume")
