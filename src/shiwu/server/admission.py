"""What the server lets in, and in which order it decodes it.

- ``Budget``: a counter of bytes (request bodies being read) or pixels (big images admitted)
  that a request reserves *before* the work starts, and gets 503 + Retry-After when it does not
  fit: refusing early costs nothing, queueing into a 504 costs the client 30 s and us the memory.
- ``DecodeScheduler``: decoding threads in two lanes. Small images (most photos, and every JPEG
  once draft-decoded) never wait behind big ones: the small lane takes only small images; the
  big lane takes big ones first, round-robin over requests (a request of 16 huge PNGs does not
  hold back another request's), and helps with small ones when it has nothing big to do. The
  big lane runs at a lower CPU priority (Linux thread nice), so on a small machine a big
  decode yields the cores to small photos and to inference.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections import OrderedDict, deque
from typing import Callable

log = logging.getLogger("uvicorn.error")

BIG_LANE_NICE = 10  # how much lower the big lane's CPU priority is (Linux: per thread)


class Budget:
    """A non-blocking reservation counter (used on the event loop only: no lock needed)."""

    def __init__(self, limit: int):
        self.limit = int(limit)
        self.used = 0

    def try_take(self, amount: int) -> int | None:
        """Reserve ``amount`` (clamped to the whole budget, so one request that fits the
        limits always gets in when alone); the amount taken, or None when it does not fit."""
        amount = min(int(amount), self.limit)
        if self.used + amount > self.limit:
            return None
        self.used += amount
        return amount

    def give_back(self, amount: int) -> None:
        self.used = max(0, self.used - amount)


class _Job:
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


class DecodeScheduler:
    def __init__(self, threads: int):
        threads = max(2, int(threads))  # one lane each, at the least
        self.big_threads = max(1, threads // 2)
        self.small_threads = threads - self.big_threads
        self._cond = threading.Condition()
        self._small: deque[_Job] = deque()
        self._big: OrderedDict[object, deque[_Job]] = OrderedDict()  # request -> its big jobs
        self._closed = False
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
        job = _Job(fn, loop.create_future(), loop)
        with self._cond:
            if self._closed:
                raise RuntimeError("server is shutting down")
            if big:
                self._big.setdefault(request, deque()).append(job)
            else:
                self._small.append(job)
            self._cond.notify_all()
        return job.future

    def _next(self, big_lane: bool) -> _Job | None:
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
            job.run()

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
