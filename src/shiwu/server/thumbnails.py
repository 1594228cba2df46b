"""Reading an indexed photo for its thumbnail without trusting the file system to be as it was.

The path comes from a row of the index (never from the client), but the tree it names may have
changed since it was indexed. So:

- every folder on the path is opened with ``O_NOFOLLOW`` relative to the one before (``openat``):
  the indexed path is a real path (no links at indexing time), so a folder swapped for a link
  since then is refused instead of followed outside the indexed tree;
- the file itself is opened ``O_NOFOLLOW | O_NONBLOCK`` and must be a regular file (``fstat``):
  a FIFO, a device or a socket put in place of a photo is refused at once, never waited on;
- its size and modification time must still be the indexed ones, and at most that many bytes
  are read;
- the work runs on a few daemon threads (``ThumbnailThreads``) with a deadline: a read that
  hangs anyway (a dead network mount) costs the request a 504 and one thread, which /healthz
  reports, and never keeps the process from exiting on SIGTERM.
"""

from __future__ import annotations

import asyncio
import errno
import os
import queue
import stat as stat_module
import threading

from .decoding import Job, RunningJobs

THUMBNAIL_THREADS = 4
# An indexed photo larger than this is not read for a thumbnail (RAM per request stays bounded).
MAX_THUMBNAIL_SOURCE_BYTES = 256 * 1024 * 1024
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_FILE_FLAGS = (os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
               | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0))
CHANGED = "the file changed since it was indexed: run `shiwu index` again"
GONE = "the indexed file is no longer there (run `shiwu index ... --prune`)"
LINKED = ("a folder or the file on the indexed path was replaced by a link since it was indexed: "
          "refused (run `shiwu index` again)")


def _open_without_links(path: str) -> int:
    """A descriptor of ``path`` (absolute) opened one component at a time, no link followed."""
    if not os.path.isabs(path):
        raise OSError(errno.EINVAL, "not an absolute path", path)
    if os.open not in os.supports_dir_fd:  # no openat here: compare the resolved path instead
        if os.path.realpath(path) != os.path.normpath(path):
            raise OSError(errno.ELOOP, "a link on the path", path)
        return os.open(path, _FILE_FLAGS)
    head, name = os.path.split(os.path.normpath(path))
    folders = [part for part in head.split(os.sep) if part]
    fd = os.open(os.sep, _DIR_FLAGS)
    try:
        for part in folders:
            inner = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = inner
        return os.open(name, _FILE_FLAGS, dir_fd=fd)
    finally:
        os.close(fd)


def read_indexed_file(path: str, size: int, mtime_ns: int) -> bytes | str:
    """The bytes of the indexed file at real path ``path`` if it is still the regular file of
    ``size`` bytes and ``mtime_ns`` that was indexed, else why not (a 404 for the client)."""
    try:
        fd = _open_without_links(path)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
            return LINKED
        return GONE
    with os.fdopen(fd, "rb", buffering=0) as file:
        info = os.fstat(fd)
        if not stat_module.S_ISREG(info.st_mode):
            return "the indexed path is no longer a regular file (a pipe, device or folder): refused"
        if (info.st_size, info.st_mtime_ns) != (size, mtime_ns):
            return CHANGED
        if size > MAX_THUMBNAIL_SOURCE_BYTES:
            return f"the indexed file is over {MAX_THUMBNAIL_SOURCE_BYTES // 2 ** 20} MiB: no thumbnail"
        os.set_blocking(fd, True)  # a regular file: reads never wait on a writer
        chunks, left = [], size + 1  # one byte more than indexed tells a file that grew
        while left > 0:
            chunk = file.read(min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    data = b"".join(chunks)
    return data if len(data) == size else CHANGED


class ThumbnailThreads:
    """A few daemon threads for thumbnail work: a thread stuck in the kernel is counted (for
    /healthz) and left behind at exit instead of being joined (which would hang SIGTERM)."""

    def __init__(self, threads: int = THUMBNAIL_THREADS):
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._running = RunningJobs()
        self.threads = threads
        for i in range(threads):
            threading.Thread(target=self._work, name=f"shiwu-thumbnail-{i}", daemon=True).start()

    def submit(self, fn) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        job = Job(fn, loop.create_future(), loop)
        self._jobs.put(job)
        return job.future

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            self._running.run(job)

    def stuck(self, after: float) -> int:
        return self._running.stuck(after)

    def close(self) -> None:
        for _ in range(self.threads):
            self._jobs.put(None)
