"""The service behind every route: the loaded model, its micro-batcher, the decode lanes,
the admission budgets and the drain state.

One image flows like this, and no step blocks the event loop:

    body read and spooled (uploads) ─▶ header probe: big or small ─▶ decode + preprocess
    (decode lanes) ─▶ micro-batcher ─▶ one inference thread ─▶ top-k (and embedding)
    ─▶ one result per image, as ``shiwu predict --json`` writes it

The decode threads hand float32 arrays to the batcher even for a runtime that normalises uint8
pixels in its graph (as ``shiwu batch`` does): decoding and inference share this process's
cores, and ONNX Runtime's in-graph normalisation costs more CPU than numpy's; measured with
benchmarks/serving/serve_load.py, pixels served fewer requests per second.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager

import numpy as np

from ..images import ImageError
from ..recognizer import Result
from .batcher import MicroBatcher, QueueFull
from .decoding import DecodeLanes, decoded_pixels
from .errors import fail
from .metrics import Metrics
from .served_gallery import ServedGallery
from .served_index import ServedIndex
from .settings import AUTO_BATCH_SIZES, BATCH_GAIN_NEEDED, BIG_PIXELS, ServerSettings
from .uploads import Budget, Upload

log = logging.getLogger(__name__)

# A job running longer than a request may take (and at least this long) counts as stuck.
STUCK_FLOOR_S = 10.0


class Service:
    """The model, the batcher, the decode lanes and the drain state of one running app."""

    def __init__(self, settings: ServerSettings, metrics: Metrics, recognizer=None):
        self.settings = settings
        self.metrics = metrics
        self.recognizer = recognizer
        self.batcher: MicroBatcher | None = None
        self.error: str | None = None
        self.in_flight = 0  # images accepted and not yet answered
        self.max_batch_size: int | None = settings.max_batch_size  # decided at start-up when None
        self.batch_measurement: dict | None = None  # what decided it
        self.lanes: DecodeLanes | None = None
        self.body_bytes = Budget(settings.max_inflight_bytes)
        self.big_pixels = Budget(settings.max_decode_pixels)
        # SIGTERM: /readyz turns 503 at once; every request in progress has until
        # drain_deadline to be answered, else it gets a 503 (never a cut connection).
        self.draining = False
        self.drain_deadline: float | None = None  # loop.time() clock
        self.deadlines: set[asyncio.Timeout] = set()
        self.loop: asyncio.AbstractEventLoop | None = None
        # what the embedding routes serve, loaded with the model before it is ready
        self.index = ServedIndex(settings)
        self.gallery = ServedGallery(settings)
        self.embedding_dimension: int | None = None

    @property
    def ready(self) -> bool:
        return self.batcher is not None

    def _load(self):
        from ..recognizer import Recognizer

        s = self.settings
        recognizer = self.recognizer or Recognizer(
            s.model, backend=s.backend, precision=s.precision, threads=s.threads, size=s.size,
            batch_size=s.max_batch_size or max(AUTO_BATCH_SIZES), max_pixels=s.max_pixels,
            **({"calibration": s.calibration} if s.calibration else {}))
        self._load_embeddings(recognizer)
        self.max_batch_size = s.max_batch_size or self._measure_batch_size(recognizer)
        self._warm_up(recognizer, self.max_batch_size)
        return recognizer

    def _load_embeddings(self, recognizer) -> None:
        """The index (--index) and the gallery (--gallery), with the model's embedding size."""
        if not (self.index.configured or self.gallery.configured):
            return
        # Now: a model without embeddings says why before the server starts.
        self.embedding_dimension = recognizer.embedding_dimension
        if self.index.configured:
            self.index.load(recognizer, self.embedding_dimension)
        if self.gallery.configured:
            self.gallery.load(recognizer)

    def _measure_batch_size(self, recognizer) -> int:
        """The batch size with the lowest model time per image (1 unless batching clearly pays)."""
        size = recognizer.preprocessing.size
        batches = {n: np.zeros((n, 3, size, size), np.float32) for n in AUTO_BATCH_SIZES}
        per_image = dict.fromkeys(AUTO_BATCH_SIZES, float("inf"))
        for n, batch in batches.items():  # first calls allocate and compile: not timed
            recognizer.predict_arrays(batch, 1)
        for _ in range(3):  # interleaved, best of 3: other work on the machine hurts all alike
            for n, batch in batches.items():
                started = time.perf_counter()
                recognizer.predict_arrays(batch, 1)
                per_image[n] = min(per_image[n], (time.perf_counter() - started) / n)
        best = min(AUTO_BATCH_SIZES, key=per_image.get)
        gain = per_image[1] / per_image[best]
        chosen = best if gain >= BATCH_GAIN_NEEDED else 1
        self.batch_measurement = {"per_image_ms": {str(n): round(t * 1000, 2) for n, t in per_image.items()},
                                  "gain": round(gain, 3), "gain_needed": BATCH_GAIN_NEEDED}
        log.info("model time per image by batch size: %s; batches of %d are %.2fx as fast per image as one "
                 "at a time (worth it from %.2fx): batches of up to %d",
                 ", ".join(f"{n}: {t * 1000:.1f} ms" for n, t in per_image.items()), best, gain,
                 BATCH_GAIN_NEEDED, chosen)
        return chosen

    def _warm_up(self, recognizer, max_batch_size: int) -> None:
        """Run each batch size the batcher can form, so no request pays for a first call."""
        s = self.settings
        if s.warmup_seconds <= 0:
            return
        size = recognizer.preprocessing.size
        sizes = [1, max_batch_size] + list(range(2, max_batch_size))
        sizes = list(dict.fromkeys(sizes))  # the extremes first, in case time runs out
        deadline = time.monotonic() + s.warmup_seconds
        done = 0
        for _ in range(2):
            for n in sizes:
                if time.monotonic() > deadline:
                    log.info("warm-up stopped after %d of %d batch shapes (--warmup-seconds)",
                             done, 2 * len(sizes))
                    return
                recognizer.predict_arrays(np.zeros((n, 3, size, size), np.float32), 1)
                done += 1

    def begin_drain(self) -> None:
        """From the signal handler: flag at once (readyz), bound every request on the loop."""
        if self.draining or self.loop is None:
            return
        self.draining = True
        self.metrics.draining.set(1)
        self.loop.call_soon_threadsafe(self._apply_drain)

    def _apply_drain(self) -> None:
        self.drain_deadline = self.loop.time() + self.settings.graceful_timeout
        log.info("shutting down: %d request(s) in progress have %g s to be answered",
                 len(self.deadlines), self.settings.graceful_timeout)
        for deadline in list(self.deadlines):
            if deadline.when() is None or deadline.when() > self.drain_deadline:
                deadline.reschedule(self.drain_deadline)

    @asynccontextmanager
    async def deadline(self, seconds: float):
        """asyncio.timeout for one request, moved earlier if a drain begins meanwhile."""
        when = self.loop.time() + seconds
        if self.drain_deadline is not None:
            when = min(when, self.drain_deadline)
        async with asyncio.timeout_at(when) as timeout:
            self.deadlines.add(timeout)
            try:
                yield timeout
            finally:
                self.deadlines.discard(timeout)

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.lanes = DecodeLanes(self.settings.decode_threads)
        self.metrics.inflight_bytes.set_function(lambda: self.body_bytes.used)
        self.metrics.decode_pixels.set_function(lambda: self.big_pixels.used)
        started = time.perf_counter()
        try:
            recognizer = await asyncio.to_thread(self._load)
        except Exception as exc:  # readyz reports it; the process stays up to say why
            self.error = f"{type(exc).__name__}: {exc}"
            log.error("model could not be loaded: %s", self.error)
            return
        self.recognizer = recognizer
        batcher = MicroBatcher(recognizer.predict_arrays, max_batch_size=self.max_batch_size,
                               max_wait_ms=self.settings.max_wait_ms, max_queue=self.settings.max_queue,
                               observe=self.metrics.observe_batch,
                               predict_embed=recognizer.predict_and_embed_arrays)
        batcher.start()
        self.metrics.queue.set_function(lambda: batcher.queued)
        self.metrics.in_flight.set_function(lambda: self.in_flight)
        self.batcher = batcher
        self.metrics.ready.set(1)
        log.info("%s ready (%s, %s) in %.1f s; batches of up to %d, waiting at most %g ms",
                 recognizer.model_name, recognizer.backend.name, recognizer.backend.precision,
                 time.perf_counter() - started, self.max_batch_size, self.settings.max_wait_ms)
        self.metrics.max_batch.set(self.max_batch_size)

    def require_ready(self) -> None:
        if not self.ready:
            fail(self.metrics, 503, "not_ready", self.error or "the model is still loading",
                 headers={"Retry-After": "2"})

    async def refresh_gallery(self) -> None:
        """Pick up classes another worker process taught (see served_gallery)."""
        if self.ready and self.gallery.configured:
            await self.gallery.refresh()

    def stuck_work(self) -> str | None:
        """Why the process cannot do its work although it is alive: every thread of the decode
        lanes, or of the thumbnail readers, busy with one job for longer than a request may
        take (a read hung in the kernel, say). None when all is well."""
        after = max(self.settings.request_timeout, STUCK_FLOOR_S)
        if self.lanes is not None and self.lanes.stuck(after) >= self.lanes.threads:
            return f"all {self.lanes.threads} decode threads have been busy for over {after:g} s"
        threads = self.index.thumbnail_threads
        if threads is not None and self.index.stuck(after) >= threads.threads:
            return f"all {threads.threads} thumbnail threads have been stuck for over {after:g} s"
        return None

    async def stop(self) -> None:
        self.index.close()
        if self.batcher is not None:
            await self.batcher.close()
        if self.lanes is not None:
            self.lanes.close()

    def decode(self, upload: Upload) -> np.ndarray:
        """On a decode thread: one upload -> one preprocessed (3, size, size) array."""
        # exactly what `shiwu predict` and the Python API do: a big image box-reduced first here
        # answered differently (2 of 200 photos enlarged 6x changed their top-1), for ~70 ms
        rec = self.recognizer
        return rec.preprocessing(rec.load(upload.source()))

    def _probe(self, uploads: list[Upload]) -> list[int]:
        min_size = self.recognizer.preprocessing.decode_min_size
        return [decoded_pixels(upload, min_size) for upload in uploads]

    async def recognize(self, uploads: list[Upload], topk: int, embed: bool = False) -> list[Result]:
        """Each upload decoded and answered (per-image errors kept); with ``embed``, each good
        result also carries its embedding, from the same inference."""
        # Refuse before decoding, not after: at most max_queue images are in the works at once
        # (decoding, queued or in a batch), which bounds memory and time under overload.
        if self.in_flight + len(uploads) > self.settings.max_queue:
            raise QueueFull(f"{self.in_flight} images are in progress (limit {self.settings.max_queue})")
        self.in_flight += len(uploads)
        try:
            pixels = await asyncio.to_thread(self._probe, uploads)
            big = sum(p for p in pixels if p > BIG_PIXELS)
            taken = self.big_pixels.try_take(big) if big else 0
            if taken is None:
                raise QueueFull(f"{self.big_pixels.used:,} pixels of big images are being decoded "
                                f"(limit {self.big_pixels.limit:,})")
            try:
                return await self._recognize(uploads, pixels, topk, embed)
            finally:
                self.big_pixels.give_back(taken)
        finally:
            self.in_flight -= len(uploads)

    async def _recognize(self, uploads: list[Upload], pixels: list[int], topk: int,
                         embed: bool) -> list[Result]:
        rec = self.recognizer
        key = object()  # this request, for the big lane's round-robin
        futures = [self.lanes.submit(lambda u=u: self.decode(u), big=p > BIG_PIXELS,
                                         request=key) for u, p in zip(uploads, pixels)]
        try:
            arrays = await asyncio.gather(*futures, return_exceptions=True)
        except BaseException:
            for future in futures:  # not yet decoding: never will be
                future.cancel()
            raise
        results, good = [], []
        for upload, array in zip(uploads, arrays):
            result = Result(upload.name, model=rec.model_name, backend=rec.backend.name,
                            precision=rec.backend.precision)
            results.append(result)
            if isinstance(array, ImageError):
                result.error = array
            elif isinstance(array, BaseException):
                raise array
            else:
                good.append((result, array))
        if good:
            answers = await self.batcher.submit([array for _, array in good], topk, embed=embed)
            for (result, _), answer in zip(good, answers):
                if embed:
                    result.predictions, embedding = answer
                    result.embedding = np.asarray(embedding, dtype=np.float32)
                else:
                    result.predictions = answer
        return results
