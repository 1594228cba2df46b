"""OpenVINO's compiled-model blobs, shared by every process that uses one cache.

OpenVINO given a ``CACHE_DIR`` writes ``<hash>.blob`` there in place (open, truncate, write),
and a process that finds a blob maps it and reads the weights from the mapping while it runs. With
several processes on one cache (4 ``shiwu batch`` on a fresh cache), one process truncating and
rewriting the blob another has mapped killed that one with SIGBUS, and a process could also
import a blob still being written.

So OpenVINO never writes into the shared folder: each compilation gets a private folder beside
it (``.tmp-…``) holding hard links to the finished blobs (no copying; OpenVINO imports through them,
and removes a link, never the shared file, when it refuses a blob). A blob OpenVINO writes there
is a new file; once complete it is synced and linked into the shared folder under its name, which
appears whole or not at all (a link never replaces: the first finished copy stays). Processes
compiling the same graph at the same moment each compile it once; none reads a partial blob.

A read-only cache (a warm cache baked into an image) is given to OpenVINO as it is: it imports
the blobs there and, without error, compiles what is missing in memory.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .. import cache, fsutil

log = logging.getLogger(__name__)

SUFFIX = ".blob"


@contextmanager
def blob_folder(shared: Path) -> Iterator[str]:
    """The ``CACHE_DIR`` for one ``compile_model``: a private folder whose new blobs are published
    into ``shared`` when the block ends without an exception (see the module's docstring)."""
    shared = Path(shared)
    read_only = cache.read_only_dir()
    if read_only is not None and shared.is_relative_to(read_only):
        yield str(shared)  # read, never written
        return
    try:
        shared.mkdir(parents=True, exist_ok=True)
        _remove_stray_folders(shared)
        _remove_old_layout(shared.parent)
        private = Path(tempfile.mkdtemp(dir=shared, prefix=fsutil.TEMP_PREFIX))
    except OSError as exc:  # a folder that takes no new files: OpenVINO reads what is there
        log.debug("OpenVINO compiles without a private blob folder in %s: %s", shared, exc)
        yield str(shared)
        return
    try:
        for blob in shared.glob("*" + SUFFIX):
            try:
                os.link(blob, private / blob.name)
            except OSError:
                continue  # unreadable or vanished: OpenVINO compiles that graph and writes a new blob
        yield str(private)
        for blob in private.glob("*" + SUFFIX):
            _publish(blob, shared / blob.name)
    finally:
        shutil.rmtree(private, ignore_errors=True)


def _publish(blob: Path, target: Path) -> None:
    """Link the blob OpenVINO wrote (a file of its own: one link) into the shared folder."""
    try:
        info = blob.stat()
        if info.st_nlink != 1 or target.exists():
            return  # a shared blob imported through its link, or one published meanwhile
        if os.statvfs(blob.parent).f_bavail == 0:
            # OpenVINO does not report a failed write: a full disk may have cut this blob short
            log.debug("not keeping the OpenVINO blob %s: its disk is full", blob.name)
            return
        with open(blob, "rb") as file:
            os.fsync(file.fileno())
        os.link(blob, target)  # whole or not at all, and never over another process's blob
        fsutil.fsync_folder(target.parent)
    except FileExistsError:
        return
    except OSError as exc:
        log.debug("cannot keep the OpenVINO blob %s: %s", blob.name, exc)


def _remove_stray_folders(shared: Path) -> None:
    """The private folders of processes killed while compiling (an hour old)."""
    now = time.time()
    for stray in shared.glob(fsutil.TEMP_PREFIX + "*"):
        try:
            if stray.is_dir() and not stray.is_symlink() and now - stray.stat().st_mtime > fsutil.STRAY_AGE_SECONDS:
                shutil.rmtree(stray, ignore_errors=True)
        except OSError:
            continue


def _remove_old_layout(root: Path) -> None:
    """Blobs an earlier shiwu kept directly in ``openvino-blobs/``, before each precision had a
    folder of its own (``openvino-blobs/f32``, ``/bf16``: OpenVINO names a blob without its
    precision). Nothing reads them any more; each can be hundreds of MB. An older shiwu still
    running maps what it imported (unlinking does not disturb that) and compiles again."""
    if root.name != "openvino-blobs":
        return
    for blob in root.glob("*" + SUFFIX):
        try:
            if blob.is_file() and not blob.is_symlink():
                blob.unlink()
        except OSError:
            continue
    _remove_stray_folders(root)
