"""Micro-batching: requests that arrive close together share one inference batch.

Each request submits its preprocessed images (float32 CHW arrays) and awaits their
predictions. One collector task on the event loop takes the oldest waiting image, then keeps
adding images until the batch holds ``max_batch_size`` or the oldest image has waited
``max_wait_ms``; the batch then runs on a single dedicated inference thread, so the event loop
never does model work. While a batch runs, new images queue up; because the wait is counted
from each batch's *oldest* image, a backlog built up during inference is taken at once, with
no extra waiting. Images whose request has already given up (timed out, client gone) are
dropped before inference instead of wasting CPU.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np


class QueueFull(RuntimeError):
    """More images are waiting than the server accepts; the client should retry later."""


@dataclass(eq=False)  # compared by identity (deque.remove), never by array contents
class _Item:
    array: np.ndarray
    topk: int
    future: asyncio.Future
    embed: bool = False  # answer (predictions, embedding) instead of predictions
    enqueued: float = field(default_factory=time.monotonic)


# predict(batch, topk) -> one list of predictions per row, best first (Recognizer.predict_arrays).
PredictFn = Callable[[np.ndarray, int], Sequence[Sequence[object]]]
# predict_embed(batch, topk) -> (predictions per row, (N, D) embeddings) from the same inference
# (Recognizer.predict_and_embed_arrays): used for a batch holding any image that wants its embedding.
PredictEmbedFn = Callable[[np.ndarray, int], tuple[Sequence[Sequence[object]], np.ndarray]]
# observe(batch_size, seconds) is told about every batch that ran (metrics).
ObserveFn = Callable[[int, float], None]


class MicroBatcher:
    def __init__(self, predict: PredictFn, *, max_batch_size: int = 16, max_wait_ms: float = 5.0,
                 max_queue: int = 256, observe: ObserveFn | None = None,
                 predict_embed: PredictEmbedFn | None = None):
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        if max_wait_ms < 0:
            raise ValueError("max_wait_ms must not be negative")
        self.predict = predict
        self.predict_embed = predict_embed
        self.max_batch_size = int(max_batch_size)
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue = int(max_queue)
        self.observe = observe
        self._queue: deque[_Item] = deque()
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        # One thread: the backend already uses every core for one batch; two batches at once
        # would only fight over them.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shiwu-infer")
        self.batches = 0
        self.images = 0

    @property
    def queued(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        if self._task is None:
            self._wakeup = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="shiwu-batcher")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        for item in self._queue:
            if not item.future.done():
                item.future.set_exception(RuntimeError("server is shutting down"))
        self._queue.clear()
        self._executor.shutdown(wait=True)

    async def submit(self, arrays: Sequence[np.ndarray], topk: int, *, embed: bool = False) -> list:
        """Predictions for each array, in order; with ``embed``, (predictions, embedding) pairs.
        Raises QueueFull when the server is saturated."""
        if self._task is None:
            raise RuntimeError("MicroBatcher.start() was not called")
        if embed and self.predict_embed is None:
            raise RuntimeError("this batcher was made without predict_embed")
        if len(self._queue) + len(arrays) > self.max_queue:
            raise QueueFull(f"{len(self._queue)} images are waiting (limit {self.max_queue})")
        loop = asyncio.get_running_loop()
        items = [_Item(array, topk, loop.create_future(), embed) for array in arrays]
        self._queue.extend(items)
        self._wakeup.set()
        try:
            return list(await asyncio.gather(*(item.future for item in items)))
        except BaseException:
            # Cancelled (request timeout, client gone) or failed: the images not yet taken into
            # a batch leave the queue, so they neither get computed nor count against max_queue.
            for item in items:
                item.future.cancel()
                try:
                    self._queue.remove(item)
                except ValueError:
                    pass  # already taken into a batch
            raise

    def _take(self) -> list[_Item]:
        batch = []
        while self._queue and len(batch) < self.max_batch_size:
            item = self._queue.popleft()
            if not item.future.done():  # a cancelled request's image is not worth computing
                batch.append(item)
        return batch

    def _drop_cancelled_head(self) -> None:
        while self._queue and self._queue[0].future.done():
            self._queue.popleft()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._drop_cancelled_head()
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            deadline = self._queue[0].enqueued + self.max_wait
            while len(self._queue) < self.max_batch_size:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                except asyncio.TimeoutError:
                    break
            batch = self._take()
            if not batch:
                continue
            await self._infer(loop, batch)

    def _predict(self, arrays: list[np.ndarray], topk: int, embed: bool):
        # On the inference thread: even stacking a batch (megabytes) stays off the event loop.
        # Embedding and plain requests share batches: the embedding comes from the same run.
        if embed:
            return self.predict_embed(np.stack(arrays), topk)
        return self.predict(np.stack(arrays), topk), None

    async def _infer(self, loop, batch: list[_Item]) -> None:
        topk = max(item.topk for item in batch)
        started = time.perf_counter()
        arrays = [item.array for item in batch]
        embed = any(item.embed for item in batch)
        try:
            outputs, embeddings = await loop.run_in_executor(self._executor, self._predict, arrays,
                                                             topk, embed)
        except asyncio.CancelledError:
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(RuntimeError("server is shutting down"))
            raise
        except Exception as exc:  # the backend failed: every waiting request gets the error
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        seconds = time.perf_counter() - started
        self.batches += 1
        self.images += len(batch)
        if self.observe is not None:
            self.observe(len(batch), seconds)
        for row, (item, predictions) in enumerate(zip(batch, outputs)):
            if not item.future.done():
                answer = list(predictions)[: item.topk]
                item.future.set_result((answer, embeddings[row]) if item.embed else answer)
