"""The HTTP service behind `shiwu serve`: FastAPI on uvicorn.

One request flows like this, and no step blocks the event loop:

    read body (bounded: 413, 408) ─▶ decode + preprocess (thread pool) ─▶ micro-batcher
    ─▶ one inference thread ─▶ top-k ─▶ the result JSON per image

Endpoints: ``POST /v1/recognize``, ``GET /v1/models``, ``/healthz``, ``/readyz``, ``/metrics``,
``/docs`` (served from local files when ``fastapi-offline`` is installed), and the web page at
``/``. Images are only ever taken from the request: the service never fetches a URL.
"""

from __future__ import annotations

import asyncio
import errno
import hmac
import logging
import os
import re
import signal
import threading
import time
import warnings
from contextlib import asynccontextmanager
from importlib import resources
from tempfile import SpooledTemporaryFile

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import APIKeyHeader
from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram,
                               disable_created_metrics, generate_latest)
from starlette.exceptions import HTTPException
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect

from ..version import __version__
from ..images import ImageError
from ..recognizer import Result
from .admission import Budget, DecodeScheduler
from .batcher import MicroBatcher, QueueFull
from .middleware import CLIENT_CLOSED, JSONCORSMiddleware, MetricsMiddleware, SecurityMiddleware, once_every
from .protocol import install_log_filters, resource_exception_handler
from .settings import AUTO_BATCH_SIZES, BATCH_GAIN_NEEDED, BIG_PIXELS, ServerSettings

log = logging.getLogger("uvicorn.error")  # shows up with uvicorn's own start-up lines

RAW_TYPES = ("image/", "application/octet-stream")
NO_URL_FETCHING = ("shiwu does not fetch URLs; upload the image itself, as multipart/form-data "
                   "(one or more files) or as the raw request body with an image/* content type")

# ImageError reasons (shiwu.images) that mean "this is not an image format we read" -> 415;
# every other reason (corrupt, truncated, empty, too many pixels) -> 422.
UNSUPPORTED_REASONS = ("not a recognised image format", "SVG is a vector format",
                       "this is an HTML page", "HEIC/AVIF images are not supported")


# Upload bodies are written to temporary files once one passes this size (Starlette's own
# multipart spool size): memory per upload being read stays ~1 MiB whatever its size.
SPOOL_BYTES = 1024 * 1024
# The query parameters /v1/recognize accepts; anything else is refused by name (a typo such as
# `top_k=3` would otherwise silently give the default).
QUERY_PARAMETERS = ("topk",)


def image_error_status(reason: str) -> int:
    return 415 if reason.startswith(UNSUPPORTED_REASONS) else 422


class Upload:
    """One image of a request: its name, its bytes in a spooled file, and their count."""

    __slots__ = ("name", "file", "size")

    def __init__(self, name: str, file, size: int):
        self.name, self.file, self.size = name, file, size

    def source(self):
        if self.size == 0:
            return b""  # load_image says "empty input (0 bytes)" for this
        self.file.seek(0)
        return self.file


def decoded_pixels(upload: Upload, min_size: int | None) -> int:
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


def reduce_for(image, preprocessing):
    """A big image box-reduced by a whole factor that keeps at least twice the pixels the
    resize needs (Pillow's reducing_gap=2 idea): the resize then reads 1/factor^2 of them."""
    target = preprocessing.decode_min_size
    if not target:
        return image
    width, height = image.size
    if preprocessing.resize == "squash":
        factor = (max(1, width // (2 * target)), max(1, height // (2 * target)))
    else:
        factor = max(1, min(width, height) // (2 * target))
        factor = (factor, factor)
    return image.reduce(factor) if max(factor) >= 2 else image


class Metrics:
    """Prometheus metrics of one app (own registry, so several apps can live in one process)."""

    def __init__(self):
        disable_created_metrics()  # the *_created series only add noise to every scrape
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("shiwu_http_requests", "HTTP requests by path, method and status",
                                ["path", "method", "status"], registry=r)
        self.latency = Histogram("shiwu_http_request_duration_seconds", "HTTP request latency",
                                 ["path"], registry=r,
                                 buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))
        self.errors = Counter("shiwu_errors", "Failed requests and images, by kind", ["kind"],
                              registry=r)
        self.images = Counter("shiwu_images", "Images received, by outcome", ["outcome"], registry=r)
        self.batch_size = Histogram("shiwu_batch_size", "Images per inference batch", registry=r,
                                    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64))
        self.inference = Histogram("shiwu_inference_duration_seconds", "Time of one inference batch",
                                   registry=r, buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5))
        self.queue = Gauge("shiwu_queue_images", "Images decoded and waiting for inference", registry=r)
        self.in_flight = Gauge("shiwu_images_in_progress", "Images being decoded, queued or inferred",
                               registry=r)
        self.ready = Gauge("shiwu_model_ready", "1 once the model is loaded and warmed up", registry=r)
        self.max_batch = Gauge("shiwu_max_batch_size", "Largest inference batch the server forms",
                               registry=r)
        self.disconnects = Counter("shiwu_client_disconnects", "Clients that went away before their "
                                   "request was read or answered", registry=r)
        self.inflight_bytes = Gauge("shiwu_inflight_body_bytes", "Request body bytes reserved "
                                    "(being read or held)", registry=r)
        self.decode_pixels = Gauge("shiwu_big_decode_pixels", "Pixels of big images admitted and "
                                   "not yet done", registry=r)
        self.draining = Gauge("shiwu_draining", "1 once a shutdown signal arrived", registry=r)

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.inference.observe(seconds)


class Service:
    """The model, the batcher and the thread pool of one running app."""

    def __init__(self, settings: ServerSettings, metrics: Metrics, recognizer=None):
        self.settings = settings
        self.metrics = metrics
        self.recognizer = recognizer
        self.batcher: MicroBatcher | None = None
        self.error: str | None = None
        self.in_flight = 0  # images accepted and not yet answered
        self.max_batch_size: int | None = settings.max_batch_size  # decided at start-up when None
        self.batch_measurement: dict | None = None  # what decided it
        self.scheduler: DecodeScheduler | None = None
        self.body_bytes = Budget(settings.max_inflight_bytes)
        self.big_pixels = Budget(settings.max_decode_pixels)
        # SIGTERM: /readyz turns 503 at once; every request in progress has until
        # drain_deadline to be answered, else it gets a 503 (never a cut connection).
        self.draining = False
        self.drain_deadline: float | None = None  # loop.time() clock
        self.deadlines: set[asyncio.Timeout] = set()
        self.loop: asyncio.AbstractEventLoop | None = None
        # f(recognizer), run once the model is loaded and before it is ready (index, gallery)
        self.on_load: list = []

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
        for hook in self.on_load:
            hook(recognizer)
        self.max_batch_size = s.max_batch_size or self._measure_batch_size(recognizer)
        self._warm_up(recognizer, self.max_batch_size)
        return recognizer

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
        log.info("shiwu: model time per image by batch size: %s; batches of %d pay %.2fx "
                 "(%.2fx needed): batches of up to %d",
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
                    log.info("shiwu: warm-up stopped after %d of %d batch shapes (--warmup-seconds)",
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
        log.info("shiwu: shutting down: %d request(s) in progress have %g s to be answered",
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
        self.scheduler = DecodeScheduler(self.settings.decode_threads)
        self.metrics.inflight_bytes.set_function(lambda: self.body_bytes.used)
        self.metrics.decode_pixels.set_function(lambda: self.big_pixels.used)
        started = time.perf_counter()
        try:
            recognizer = await asyncio.to_thread(self._load)
        except Exception as exc:  # readyz reports it; the process stays up to say why
            self.error = f"{type(exc).__name__}: {exc}"
            log.error("shiwu: model could not be loaded: %s", self.error)
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
        log.info("shiwu: %s ready (%s, %s) in %.1f s; batches of up to %d, waiting at most %g ms",
                 recognizer.model_name, recognizer.backend.name, recognizer.backend.precision,
                 time.perf_counter() - started, self.max_batch_size, self.settings.max_wait_ms)
        self.metrics.max_batch.set(self.max_batch_size)

    async def stop(self) -> None:
        if self.batcher is not None:
            await self.batcher.close()
        if self.scheduler is not None:
            self.scheduler.close()

    def decode(self, upload: Upload, pixels: int) -> np.ndarray:
        """On a decode thread: one upload -> one preprocessed (3, size, size) array."""
        rec = self.recognizer
        image = rec.load(upload.source())
        if pixels > BIG_PIXELS and not rec.preprocessing.full_decode:
            image = reduce_for(image, rec.preprocessing)
        return rec.preprocessing(image)

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
        futures = [self.scheduler.submit(lambda u=u, p=p: self.decode(u, p), big=p > BIG_PIXELS,
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


def _fail(metrics: Metrics, status: int, kind: str, detail: str, headers=None):
    metrics.errors.labels(kind).inc()
    raise HTTPException(status, detail, headers=headers)


RECOGNIZE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": {
                "type": "object",
                "properties": {"files": {"type": "array", "items": {"type": "string", "format": "binary"},
                                         "description": "one or more images (any field name)"}},
                "required": ["files"]}},
            "image/*": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    },
}


def create_app(settings: ServerSettings | None = None, *, recognizer=None) -> FastAPI:
    """The ASGI app. ``recognizer``: an already built Recognizer to serve (else one is loaded
    from ``settings`` in the background at start-up; ``/readyz`` says when it is ready)."""
    settings = settings or ServerSettings()
    metrics = Metrics()
    service = Service(settings, metrics, recognizer)

    @asynccontextmanager
    async def lifespan(app):
        loop = asyncio.get_running_loop()
        service.loop = loop
        # fd exhaustion and the like: one line per interval, not a traceback per accept()
        loop.set_exception_handler(resource_exception_handler)
        install_log_filters()
        _warn_if_descriptors_are_short(settings)
        restore = _drain_on_signals(service)
        loading = asyncio.create_task(service.start())
        try:
            yield
        finally:
            loading.cancel()
            await service.stop()
            restore()

    kwargs = dict(title="shiwu 识物", version=__version__, lifespan=lifespan,
                  description="识别照片里的东西，用中文说出它的名字。Recognise what is in a photo, "
                              "named in Chinese, on a CPU.")
    try:  # Swagger UI from files shipped in a wheel, so /docs works offline
        from fastapi_offline import FastAPIOffline
        app = FastAPIOffline(**kwargs)
    except ImportError:
        app = FastAPI(**kwargs)
    app.state.service = service
    app.state.settings = settings

    if settings.cors_origins:
        app.add_middleware(JSONCORSMiddleware, allow_origins=list(settings.cors_origins),
                           allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "X-API-Key", "Content-Type"])
    app.add_middleware(SecurityMiddleware)  # inside metrics: its JSON 500 is counted as a 500
    app.add_middleware(MetricsMiddleware, metrics=metrics)

    api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False,
                                  description="needed when the server runs with --api-key; "
                                              "`Authorization: Bearer KEY` works too")
    # HTTP header values are bytes; Starlette hands them over decoded as latin-1, so encoding
    # back to latin-1 gives the bytes the client sent. The key is compared as UTF-8 bytes:
    # `--api-key 密钥` matches a client that sends 密钥 in UTF-8 (curl, httpx, requests do).
    expected_key = settings.api_key.encode("utf-8") if settings.api_key else b""

    def check_api_key(request: Request, key: str | None = Depends(api_key_header)) -> None:
        if not settings.api_key:
            return
        if not key:
            auth = request.headers.get("authorization", "")
            if auth[:7].lower() == "bearer ":
                key = auth[7:].strip()
        given = key.encode("latin-1", "replace") if key else b""
        if not given or not hmac.compare_digest(given, expected_key):
            _fail(metrics, 401, "unauthorized", "missing or wrong API key (X-API-Key header or "
                  "Authorization: Bearer)", headers={"WWW-Authenticate": "Bearer"})

    def parse_topk(request: Request) -> int:
        items = request.query_params.multi_items()
        names = [name for name, _ in items]
        accepted = ", ".join(QUERY_PARAMETERS)
        unknown = sorted(set(names) - set(QUERY_PARAMETERS))
        if unknown:
            _fail(metrics, 400, "bad_request", f"unknown query parameter{'s' if len(unknown) > 1 else ''} "
                  f"{', '.join(map(repr, unknown))}; accepted: {accepted}")
        if names.count("topk") > 1:
            _fail(metrics, 400, "bad_request", f"topk given {names.count('topk')} times; give it once")
        raw = dict(items).get("topk")
        if raw is None:
            return 5
        if not re.fullmatch(r"[0-9]{1,6}", raw) or not 1 <= int(raw) <= settings.max_topk:
            _fail(metrics, 422, "bad_request", f"topk must be a whole number from 1 to "
                  f"{settings.max_topk}, got {raw[:20]!r}")
        return int(raw)

    async def limited(request: Request):
        """The body's chunks, 413 once they add up to more than the upload limit."""
        limit, total = settings.max_upload_bytes, 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                _fail(metrics, 413, "too_large", f"request body is over the limit of {limit:,} bytes")
            yield chunk

    async def read_uploads(request: Request, content_type: str, opened: list) -> list[Upload]:
        """The images of the request, each spooled to a temporary file past SPOOL_BYTES as it
        streams in (the body is never held in memory whole). Files go to ``opened``."""
        if not content_type.startswith("multipart/form-data"):
            upload = UploadFile(SpooledTemporaryFile(max_size=SPOOL_BYTES), size=0)
            opened.append(upload.file)
            async for chunk in limited(request):
                await upload.write(chunk)  # to disk off the event loop once rolled over
            if not upload.size:
                _fail(metrics, 400, "bad_request", "empty request body: no image")
            return [Upload(f"<{upload.size} bytes>", upload.file, upload.size)]

        parser = MultiPartParser(request.headers, limited(request), max_files=settings.max_images,
                                 max_fields=100)
        try:
            form = await parser.parse()
        except MultiPartException as exc:
            opened.extend(parser._files_to_close_on_error)
            if exc.message.startswith("Too many files"):
                _fail(metrics, 413, "too_many_images", f"more than {settings.max_images} images in "
                      f"one request; the limit is {settings.max_images}")
            _fail(metrics, 400, "bad_request", f"malformed multipart body: {exc.message}")
        except BaseException:  # 413, client gone, timeout: close what was spooled so far
            opened.extend(parser._files_to_close_on_error)
            opened.extend(v.file for _, v in parser.items if not isinstance(v, str))
            raise
        files = [value for _, value in form.multi_items() if not isinstance(value, str)]
        opened.extend(f.file for f in files)
        if not files:
            _fail(metrics, 400, "bad_request", "no file in the multipart body. " + NO_URL_FETCHING)
        uploads = []
        for index, upload in enumerate(files):
            size = upload.size or 0
            name = os.path.basename((upload.filename or "").replace("\\", "/"))[:200]
            uploads.append(Upload(name or f"<upload {index + 1}: {size} bytes>", upload.file, size))
        return uploads

    busy = {"Retry-After": "1", "Connection": "close"}
    accepted_query = ("The only query parameter is `topk`; any other, or `topk` given twice, is "
                      "refused with 400 naming the accepted ones.")

    async def take_uploads(request: Request, work):
        """``await work(uploads)`` for the images of ``request``, with every limit of an upload
        route: draining and readiness, content type and size (415, 413), the byte budget before
        the body is read (503), the request deadline (408 reading, 504 answering, 503 when a
        drain cuts it), a client gone (499), queue and pixel budgets (503), failed inference
        (500). The spooled files are open while ``work`` runs and closed after it."""
        if service.draining:
            _fail(metrics, 503, "shutting_down", "the server is shutting down; retry on another "
                  "instance", headers=busy)
        if not service.ready:
            _fail(metrics, 503, "not_ready", service.error or "the model is still loading",
                  headers={"Retry-After": "2"})
        content_type = request.headers.get("content-type", "").strip().lower()
        if content_type and not content_type.startswith(("multipart/form-data",) + RAW_TYPES):
            _fail(metrics, 415, "unsupported_media", f"unsupported content type {content_type!r}. "
                  + NO_URL_FETCHING)
        limit = settings.max_upload_bytes
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > limit:
            _fail(metrics, 413, "too_large", f"request body is {int(length):,} bytes; "
                  f"the limit is {limit:,}")
        # Admission before a byte of the body is read: a body of unknown length may be as
        # large as the upload limit, so it reserves that much.
        wanted = int(length) if length and length.isdigit() else limit
        reserved = service.body_bytes.try_take(wanted)
        if reserved is None:
            _fail(metrics, 503, "overloaded", f"server busy: {service.body_bytes.used:,} bytes of uploads "
                  f"in progress (limit {service.body_bytes.limit:,})", headers=busy)
        opened: list = []
        phase = "body"
        try:
            async with service.deadline(settings.request_timeout):
                uploads = await read_uploads(request, content_type, opened)
                phase = "answer"
                return await work(uploads)
        except TimeoutError:
            if service.draining:
                _fail(metrics, 503, "shutting_down", "the server is shutting down and could not "
                      f"answer within --graceful-timeout ({settings.graceful_timeout:g} s); retry",
                      headers=busy)
            if phase == "body":
                _fail(metrics, 408, "timeout", f"the request body did not arrive within "
                      f"{settings.request_timeout:g} s", headers={"Connection": "close"})
            _fail(metrics, 504, "timeout", f"no answer within {settings.request_timeout:g} s")
        except ClientDisconnect:
            request.scope["shiwu.client_gone"] = True
            metrics.disconnects.inc()
            once_every("client-gone", "shiwu: a client went away while sending its body "
                       "(counted in shiwu_client_disconnects_total)", level=logging.INFO)
            return Response(status_code=CLIENT_CLOSED)
        except QueueFull as exc:
            _fail(metrics, 503, "overloaded", f"server busy: {exc}", headers={"Retry-After": "1"})
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOSPC):
                once_every("upload-resources", "shiwu: cannot spool an upload: %s", exc)
                _fail(metrics, 503, "overloaded", f"server out of resources ({exc.strerror}); retry later",
                      headers=busy)
            raise
        except HTTPException:
            raise
        except Exception as exc:
            log.exception("shiwu: inference failed")
            _fail(metrics, 500, "inference", f"inference failed: {type(exc).__name__}: {exc}")
        finally:
            service.body_bytes.give_back(reserved)
            for file in opened:
                file.close()

    # the embedding routes (/v1/embed, /v1/search, /v1/gallery, thumbnails) share these
    app.state.take_uploads, app.state.check_api_key = take_uploads, check_api_key
    from .vectors import install
    install(app)

    @app.post("/v1/recognize", openapi_extra={**RECOGNIZE_BODY, "parameters": [{
                  "name": "topk", "in": "query", "required": False,
                  "schema": {"type": "integer", "minimum": 1, "maximum": settings.max_topk, "default": 5},
                  "description": "labels per image, best first (a whole number). " + accepted_query}]},
              tags=["recognition"],
              summary="识别图片 · recognise one or more images",
              responses={400: {"description": "malformed body, unknown or repeated query parameter"},
                         401: {"description": "missing or wrong API key"},
                         408: {"description": "the body arrived too slowly"},
                         413: {"description": "body too large, or too many images"},
                         415: {"description": "not an image format shiwu reads, or not an upload"},
                         422: {"description": "corrupt image, too many pixels (decompression bomb), "
                                              "or topk not a whole number in range"},
                         503: {"description": "model still loading, too busy (bytes, pixels or "
                                              "images in flight), or shutting down: retry later"},
                         504: {"description": "no answer within the request timeout"}})
    async def recognize(request: Request, _auth: None = Depends(check_api_key)):
        """Upload images as `multipart/form-data` (any field names, one or more files) or one image
        as the raw body. Answers `{"results": [...]}`, one result object (docs/architecture.md) per image in
        upload order. When every image failed the status is the first failure's (415 not an
        image, 422 corrupt or too many pixels) and `detail` gives its reason. """ + accepted_query
        topk = parse_topk(request)
        results = await take_uploads(request, lambda uploads: service.recognize(uploads, topk))
        if isinstance(results, Response):  # the client went away
            return results
        body = {"results": [r.to_dict() for r in results]}
        failed = [r for r in results if r.error is not None]
        metrics.images.labels("ok").inc(len(results) - len(failed))
        if failed:
            metrics.images.labels("error").inc(len(failed))
            metrics.errors.labels("image_error").inc(len(failed))
        if failed and len(failed) == len(results):
            reason = failed[0].error.reason if isinstance(failed[0].error, ImageError) else str(failed[0].error)
            return JSONResponse({"detail": reason, **body}, status_code=image_error_status(reason))
        return JSONResponse(body)

    @app.api_route("/v1/models", methods=["GET", "HEAD"], tags=["info"],
                   summary="the model being served, and the limits")
    async def models():
        from ..models.registry import get_model

        rec = service.recognizer
        spec = rec.spec if rec is not None else get_model(settings.model)
        size = rec.preprocessing.size if rec is not None else (settings.size or spec.preprocessing.size)
        return {
            "models": [{
                "name": spec.name, "description": spec.description, "classes": spec.num_classes,
                "input_size": size, "ready": service.ready,
                "backend": rec.backend.name if rec is not None else settings.backend,
                "precision": rec.backend.precision if rec is not None else settings.precision,
            }],
            "auth_required": bool(settings.api_key),
            "limits": {"max_upload_bytes": settings.max_upload_bytes, "max_images": settings.max_images,
                       "max_pixels": settings.max_pixels, "max_topk": settings.max_topk,
                       "request_timeout_s": settings.request_timeout,
                       "max_inflight_bytes": settings.max_inflight_bytes,
                       "max_decode_pixels": settings.max_decode_pixels, "big_image_pixels": BIG_PIXELS,
                       "max_connections": settings.max_connections,
                       "header_timeout_s": settings.header_timeout,
                       "keep_alive_timeout_s": settings.keep_alive_timeout,
                       "graceful_timeout_s": settings.graceful_timeout},
            "batching": {"max_batch_size": service.max_batch_size, "max_wait_ms": settings.max_wait_ms,
                         "chosen_by": "setting" if settings.max_batch_size else "measurement",
                         "measurement": service.batch_measurement},
            "version": __version__,
        }

    @app.api_route("/healthz", methods=["GET", "HEAD"], tags=["info"], summary="the process is alive")
    async def healthz():
        return {"status": "ok"}

    @app.api_route("/readyz", methods=["GET", "HEAD"], tags=["info"],
                   summary="the model is loaded and warmed up (503 while loading or shutting down)")
    async def readyz():
        if service.draining:  # load balancers stop sending here at once
            return JSONResponse({"status": "draining"}, status_code=503)
        if service.ready:
            return {"status": "ready", "model": service.recognizer.model_name}
        if service.error:
            return JSONResponse({"status": "failed", "detail": service.error}, status_code=503)
        return JSONResponse({"status": "loading"}, status_code=503)

    @app.get("/metrics", tags=["info"], summary="Prometheus metrics")
    async def prometheus():
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    page = (resources.files("shiwu.server") / "static" / "index.html").read_text(encoding="utf-8")

    # The page's CSP (everything inline or same-origin: no CDN) and the other security headers
    # come from SecurityMiddleware, as for every response.
    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def index():
        return HTMLResponse(page)

    return app


def _warn_if_descriptors_are_short(settings: ServerSettings) -> None:
    """Each connection is a descriptor, and so is each upload spooled to disk: with fewer than
    --max-connections free, the cap cannot work and accept() fails first."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):
        return
    if soft != resource.RLIM_INFINITY and soft < settings.max_connections + 64:
        log.warning("shiwu: the open-file limit (%d) is below --max-connections (%d) + 64; "
                    "raise it (ulimit -n) or lower --max-connections", soft, settings.max_connections)


def _drain_on_signals(service: Service):
    """Wrap the SIGTERM/SIGINT handlers uvicorn installed (its Server, in every worker) so
    the drain starts in the handler itself: /readyz is 503 before the next request is read.
    Returns what puts the previous handlers back."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        handler = signal.getsignal(sig)
        if not callable(handler):  # not under uvicorn (tests with an in-process client)
            continue

        def drain_then(signum, frame, handler=handler):
            service.begin_drain()
            handler(signum, frame)
        previous[sig] = handler
        signal.signal(sig, drain_then)

    def restore():
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return restore


def app_from_env() -> FastAPI:
    """uvicorn factory (``--factory shiwu.server.app:app_from_env``): settings from the
    environment, as ``shiwu serve`` passes them to its worker processes."""
    return create_app(ServerSettings.from_env())
