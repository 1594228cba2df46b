"""The local engine: decoder processes overlapped with batched inference in this process.

::

    paths ─▶ decoder processes ─▶ shared-memory batch buffers ─▶ inference streams ─▶ rows
             (spawned: Pillow +    (no pickling of pixels)        (threads of this
              numpy, no torch)                                     process, a model each)

Decoders work on whole batches (JPEG draft decoding, resize, crop; normalising too, unless the
runtime does it inside its graph, when they hand over uint8 pixels) and stay a few batches ahead; two models ("streams", one thread each on a 2-core machine) work on different
batches at once, so a core freed by a decoder is picked up at once, without the stalls of one
model synchronising two threads. Rows come out in input order.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import queue
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np

from ..images import DEFAULT_MAX_PIXELS
from . import semaphores
from .decoders import (Decoded, DecoderError, SharedBatches, decode_batch, decode_in_worker,
                       decode_isolated, init_worker)

__all__ = ["ModelOptions", "DecoderError", "Decoded", "decode_batch", "rows_for", "run_local",
           "default_workers", "plan_streams"]


@dataclass(frozen=True)
class ModelOptions:
    """Everything needed to build the same Recognizer in any process (picklable)."""

    model: str | None = None
    backend: str = "auto"
    precision: str = "fp32"
    threads: int | None = None
    size: int | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    calibration: str | None = None  # int8: folder of photos to calibrate on

    def recognizer(self, batch_size: int = 32):
        from ..recognizer import Recognizer

        extra = {"calibration": self.calibration} if self.calibration else {}
        return Recognizer(self.model, backend=self.backend, precision=self.precision,
                          threads=self.threads, size=self.size, batch_size=batch_size,
                          max_pixels=self.max_pixels, **extra)


def rows_for(paths: Sequence[str], decoded: Decoded, recognizer, topk: int,
             embed: bool = False) -> list[dict]:
    """Result JSON rows (docs/architecture.md) for one batch, in input order. ``embed``: each good row also has its
    ``embedding`` (an L2-normalised float32 array, from the same inference), for shiwu index."""
    from ..recognizer import Result

    embeddings = {}
    if decoded.ok and embed:  # float arrays or uint8 pixels, whichever the decoders made
        predictions, vectors = recognizer.predict_and_embed_arrays(decoded.pixels, topk)
        embeddings = dict(zip(decoded.ok, vectors))
    else:
        predictions = recognizer.predict_arrays(decoded.pixels, topk) if decoded.ok else []
    by_position = dict(zip(decoded.ok, predictions))
    rows = []
    for position, path in enumerate(paths):
        result = Result(path, predictions=by_position.get(position, []),
                        model=recognizer.model_name, backend=recognizer.backend.name,
                        precision=recognizer.backend.precision)
        row = result.to_dict()
        if position in decoded.errors:
            kind, message = decoded.errors[position]
            row["error"] = {"type": kind, "message": message}
        if position in embeddings:
            row["embedding"] = embeddings[position]
        rows.append(row)
    return rows


def default_workers() -> int:
    """Decode processes: one per usable CPU.

    Decoders only use a CPU while they have a batch to decode, and a 12-megapixel JPEG costs
    several times what EfficientNet-Lite0 costs to classify it, so on a small machine they need
    every core at times; the inference streams (one thread each) keep their share regardless.
    """
    from ..cpu import usable_cpus

    return max(1, len(usable_cpus()))


def plan_streams(threads: int | None, streams: int | None) -> tuple[int, int]:
    """(streams, threads per stream) for ``threads`` inference threads in all (default: one
    per physical core).

    Two single-threaded models working on different batches beat one model with two threads:
    no synchronisation between the threads of one operator, and no stall when a decoder takes a
    core for a moment. Two streams (not one per core) keep memory at two copies of the model.
    """
    from ..cpu import default_threads

    total = threads or default_threads()
    streams = streams or min(2, total)
    return streams, max(1, total // streams)


def run_local(paths: Sequence[str], options: ModelOptions, *, topk: int = 5, batch_size: int = 32,
              workers: int | None = None, streams: int | None = None,
              should_stop: Callable[[], bool] = lambda: False,
              on_ready: Callable[[object], None] | None = None,
              embed: bool = False) -> Iterator[list[dict]]:
    """Yield the rows of each batch of ``paths``, in order, until done or ``should_stop()``.

    ``workers=0`` decodes in this process (no overlap; for debugging). ``streams`` models run
    batches side by side, in threads of this process (default 2; see ``plan_streams``).
    After ``should_stop()`` the batches already in the models are finished and yielded.
    """
    workers = default_workers() if workers is None else workers
    if workers <= 0:
        streams = 1  # decoding in this thread: one model is all it can keep busy
    streams, per_stream = plan_streams(options.threads, streams)
    stream_options = dataclasses.replace(options, threads=per_stream)
    recognizers = [stream_options.recognizer(batch_size) for _ in range(streams)]
    if on_ready is not None:
        on_ready(recognizers[0])
    preprocessing = recognizers[0].preprocessing
    # uint8 pixels to a runtime that normalises in its graph (a quarter of the bytes), else floats
    as_pixels = all(recognizer.takes_pixels() for recognizer in recognizers)
    if streams > 1:
        # Each model's first inference here, one after the other: OpenVINO's Python binding
        # initialises a static at its first call, and two stream threads making that call at
        # once can deadlock on it and the GIL (seen: a `--backend openvino` run hung for good).
        blank = decode_batch([], preprocessing, as_pixels=as_pixels).pixels
        first = np.zeros((1, *blank.shape[1:]), blank.dtype)
        for recognizer in recognizers:
            recognizer.predict_arrays(first, 1)
    chunks = [paths[i:i + batch_size] for i in range(0, len(paths), batch_size)]
    if workers <= 0 or not chunks:
        for chunk in chunks:
            yield rows_for(chunk, decode_batch(chunk, preprocessing, options.max_pixels, as_pixels=as_pixels),
                           recognizers[0], topk, embed)
            if should_stop():
                return
        return

    depth = workers + 1  # batches decoding or decoded, waiting for a model
    # a buffer for each batch in the decoders and each batch in the models
    slots = (SharedBatches(depth + streams, batch_size, preprocessing.size, as_pixels)
             if SharedBatches.usable() else None)
    buffers = slots.shared_fds() if slots is not None else []
    semaphores.remove_dead_runs()  # what a kill -9 of an earlier run's process group left

    def new_pool() -> ProcessPoolExecutor:
        with semaphores.named_for_this_run():
            return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=init_worker,
                                       initargs=(preprocessing, options.max_pixels, as_pixels, buffers))

    pool = new_pool()
    models = ThreadPoolExecutor(streams, thread_name_prefix="shiwu-infer")
    idle = queue.SimpleQueue()
    for recognizer in recognizers:
        idle.put(recognizer)

    def infer(chunk, decoded):
        recognizer = idle.get()
        try:
            return rows_for(chunk, decoded, recognizer, topk, embed)
        finally:
            idle.put(recognizer)

    decoding: deque = deque()   # (chunk, slot or None, future), in input order
    inferring: deque = deque()  # (slot or None, future), in input order
    next_chunk = 0

    def submit(chunk, slot=None):
        if slots is not None and slot is None:
            slot = slots.free.popleft()
        address = slots.address(slot) if slots is not None else None
        try:
            future = pool.submit(decode_in_worker, chunk, address)
        except BrokenProcessPool as exc:
            # a decoder died between two batches: the pool refuses new work at once; handled
            # like a crash seen in a result (below), in input order
            future = Future()
            future.set_exception(exc)
        decoding.append((chunk, slot, future))

    def fill():
        nonlocal next_chunk
        while (next_chunk < len(chunks) and len(decoding) < depth
               and (slots is None or slots.free)):
            submit(chunks[next_chunk])
            next_chunk += 1

    stopping = False
    decoded_batches = 0
    try:
        while decoding or inferring or (next_chunk < len(chunks) and not stopping):
            if not stopping:
                fill()
            if decoding and len(inferring) < streams and not stopping:
                chunk, slot, future = decoding.popleft()
                try:
                    decoded = future.result()
                    if slot is not None:
                        decoded.pixels = slots.view(slot, len(decoded.ok))
                except BrokenProcessPool:
                    # A decoder crashed (a C-level fault in an image library). Decode this
                    # batch image by image, each in a fresh process, to find the culprit.
                    pool.shutdown(wait=False, cancel_futures=True)
                    if not decoded_batches:
                        raise DecoderError(
                            "the decoder processes died before decoding anything. From a script, "
                            "call shiwu.batch under `if __name__ == \"__main__\":` (they are "
                            "started with multiprocessing's spawn); or try --workers 0") from None
                    decoded = decode_isolated(chunk, preprocessing, options.max_pixels, as_pixels)
                    pool = new_pool()
                    retry = list(decoding)
                    decoding.clear()
                    for c, s_, _ in retry:
                        submit(c, s_)
                decoded_batches += 1
                inferring.append((slot, models.submit(infer, chunk, decoded)))
                decoded = None
                fill()  # keep the decoders busy while the models work
                continue
            if not inferring:
                break  # stopping, and nothing in the models
            slot, future = inferring.popleft()
            rows = future.result()
            if slot is not None:
                slots.free.append(slot)
            yield rows
            if should_stop() and not stopping:
                stopping = True
                for _, s_, f in decoding:
                    f.cancel()
                decoding.clear()
    finally:
        try:  # a second Ctrl-C may end the waiting here, never the closing below
            models.shutdown(wait=True, cancel_futures=True)
            pool.shutdown(wait=True, cancel_futures=True)
        finally:
            if slots is not None:
                slots.close()
