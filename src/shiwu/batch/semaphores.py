"""The named semaphores of the decoder pool: shiwu's name on them, and a dead run's removed.

A pool of spawned processes (``ProcessPoolExecutor`` with multiprocessing's spawn) talks through
queues whose locks are POSIX named semaphores, five per pool, each a file ``/dev/shm/sem.mp-…``
until the pool ends. Python's resource tracker removes them when the run dies, but a kill -9 of
the whole process group kills the tracker too, and nothing could tell whose they were. The pool's
semaphores are named ``shiwu-<pid>-…`` instead, and each local run first removes those whose
process is gone.
"""

from __future__ import annotations

import multiprocessing
import os
import re
from contextlib import contextmanager
from typing import Iterator

SHM = "/dev/shm"
_OURS = re.compile(r"^sem\.shiwu-(\d+)-")


@contextmanager
def named_for_this_run() -> Iterator[None]:
    """Semaphores made inside this block are ``/dev/shm/sem.shiwu-<pid>-…`` (multiprocessing
    names them from its ``semprefix``; the pool makes all of its own in its constructor)."""
    config = multiprocessing.current_process()._config  # noqa: SLF001 - the one knob there is
    before = config.get("semprefix", "/mp")
    config["semprefix"] = f"/shiwu-{os.getpid()}"
    try:
        yield
    finally:
        config["semprefix"] = before


def remove_dead_runs() -> list[str]:
    """Remove the semaphores of shiwu runs whose process no longer exists; their names."""
    try:
        names = os.listdir(SHM)
    except OSError:
        return []
    removed = []
    for name in names:
        match = _OURS.match(name)
        if match is None or _alive(int(match.group(1))):
            continue
        try:
            os.unlink(os.path.join(SHM, name))
            removed.append(name)
        except OSError:  # another user's, or removed by a run starting at the same moment
            pass
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process
        return True
    return True
