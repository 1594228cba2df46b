"""Decoding uploads off the event loop, in two lanes.

Small images (most photos, and every JPEG once draft-decoded) never wait behind big ones: the
small lane takes only small images; the big lane takes big ones first, round-robin over
requests (a request of 16 huge PNGs does not hold back another request's), and helps with
small ones when it has nothing big to do. The big lane runs at a lower CPU priority (Linux
thread nice), so on a small machine a big decode yields the cores to small photos and to
inference. Whether an image is big is read from its header before it is decoded.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import warnings
from collections import OrderedDict, deque
from typing import Callable

BIG_LANE_NICE = 10  # how much lower the big lane's CPU priority is (Linux: per thread)


def decoded_pixels(upload, min_size: int | None) -> int:
    """Pixels the image will have once decoded, from its header (JPEG: after draft scaling);
    0 when the header cannot be read (the decode then fails fast with the reason)."""
    if upload.size == 0:
        return 0
    from PIL import Image

    try:
        upload.file.seek(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(upload.file) as image:
                if min_size and image.format == "JPEG":
                    image.draft("RGB", (min_size, min_size))
                return int(image.size[0]) * int(image.size[1])
    except Exception:  # noqa: BLE001 - any failure here is reported by the real decode
        return 0


class Job:
    """A function to run on a thread, settling an asyncio future on the loop that asked."""

    __slots__ = ("fn", "future", "loop")

    def __init__(self, fn, future, loop):
        self.fn, self.future, self.loop = fn, future, loop

    def run(self) -> None:
        if self.future.cancelled():  # the request gave up while this waited: skip the work
            return
        try:
            result = self.fn()
        except BaseException as exc:  # handed to the awaiting request, which decides
            self.loop.call_soon_threadsafe(_settle, self.future, None, exc)
        else:
            self.loop.call_soon_threadsafe(_settle, self.future, result, None)


def _settle(future: asyncio.Future, result, exc) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)


class RunningJobs:
    """When each worker thread's current job started, so a pool can say how many threads have
    been stuck in one job for too long (/healthz answers 503 when a whole pool is)."""

    def __init__(self) -> None:
        self._started: dict[int, float] = {}  # thread id -> when its job started (monotonic)

    def run(self, job: "Job") -> None:
        ident = threading.get_ident()
        self._started[ident] = time.monotonic()
        try:
            job.run()
        finally:
            self._started.pop(ident, None)

    def stuck(self, after: float) -> int:
        """Threads whose current job has run for more than ``after`` seconds."""
        now = time.monotonic()
        return sum(now - started > after for started in list(self._started.values()))


class DecodeLanes:
    """Decoding threads in two lanes (small images never wait behind big ones); see the module."""

    def __init__(self, threads: int):
        threads = max(2, int(threads))  # one lane each, at the least
        self.big_threads = max(1, threads // 2)
        self.small_threads = threads - self.big_threads
        self._cond = threading.Condition()
        self._small: deque[Job] = deque()
        self._big: OrderedDict[object, deque[Job]] = OrderedDict()  # request -> its big jobs
        self._closed = False
        self._running = RunningJobs()
        self._workers = [threading.Thread(target=self._work, args=(i < self.big_threads,),
                                          name=f"shiwu-decode-{'big' if i < self.big_threads else 'small'}-{i}",
                                          daemon=True)
                         for i in range(threads)]
        for worker in self._workers:
            worker.start()

    @property
    def queued(self) -> tuple[int, int]:
        with self._cond:
            return len(self._small), sum(len(q) for q in self._big.values())

    def submit(self, fn: Callable[[], object], *, big: bool, request: object) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        job = Job(fn, loop.create_future(), loop)
        with self._cond:
            if self._closed:
                raise RuntimeError("server is shutting down")
            if big:
                self._big.setdefault(request, deque()).append(job)
            else:
                self._small.append(job)
            self._cond.notify_all()
        return job.future

    def _next(self, big_lane: bool) -> Job | None:
        if big_lane and self._big:
            request, jobs = next(iter(self._big.items()))
            job = jobs.popleft()
            del self._big[request]
            if jobs:  # to the back of the rotation
                self._big[request] = jobs
            return job
        if self._small:
            return self._small.popleft()
        return None

    def _work(self, big_lane: bool) -> None:
        if big_lane:
            try:  # Linux: a thread is a task with its own nice value
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BIG_LANE_NICE)
            except (AttributeError, OSError):
                pass
        while True:
            with self._cond:
                job = self._next(big_lane)
                while job is None:
                    if self._closed:
                        return
                    self._cond.wait()
                    job = self._next(big_lane)
            self._running.run(job)

    def stuck(self, after: float) -> int:
        """Threads whose current job has run for more than ``after`` seconds."""
        return self._running.stuck(after)

    @property
    def threads(self) -> int:
        return len(self._workers)

    def close(self) -> None:
        """Stop taking work; jobs not started are cancelled (their requests are answered by the
        drain), a job being decoded finishes on its daemon thread."""
        with self._cond:
            self._closed = True
            pending = list(self._small) + [job for jobs in self._big.values() for job in jobs]
            self._small.clear()
            self._big.clear()
            self._cond.notify_all()
        for job in pending:
            job.loop.call_soon_threadsafe(job.future.cancel)
