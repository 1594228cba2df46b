"""Stopping a run cleanly: the first Ctrl-C (or SIGTERM) finishes the batch in flight, and a
write past the file size limit fails with an error instead of killing the process."""

from __future__ import annotations

import signal
import threading
from typing import Callable


class StopFlag:
    """Set by the first Ctrl-C (or SIGTERM): finish the current batch, write it, stop. A second
    Ctrl-C stops at once (rows already written stay valid)."""

    def __init__(self, say: Callable[[str], None], *, unit: str = "batch"):
        self.event = threading.Event()
        self.say = say
        self.unit = unit  # what is finished before stopping: "batch", "photo"
        self.previous: dict = {}

    def __call__(self) -> bool:
        return self.event.is_set()

    def _handle(self, signum, frame):
        if self.event.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.event.set()
        self.say(f"shiwu: stopping after the current {self.unit} (press Ctrl-C again to stop now)")

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous.clear()


def ignore_sigxfsz():
    """Writing past the process's file size limit (RLIMIT_FSIZE) kills a process with SIGXFSZ
    by default, mid-row and without a word. The python executable ignores it at start-up, but an
    application embedding Python may not: ignored, the write fails with EFBIG and the run stops
    with a clear error instead."""
    if not hasattr(signal, "SIGXFSZ") or threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def restore_sigxfsz(previous) -> None:
    if previous is not None:
        signal.signal(signal.SIGXFSZ, previous)
