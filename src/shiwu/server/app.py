"""The HTTP service behind `shiwu serve`: FastAPI on uvicorn.

One request flows like this, and no step blocks the event loop:

    read body (bounded: 413, 408) ─▶ decode + preprocess (thread pool) ─▶ micro-batcher
    ─▶ one inference thread ─▶ top-k ─▶ DESIGN.md JSON per image

Endpoints: ``POST /v1/recognize``, ``GET /v1/models``, ``/healthz``, ``/readyz``, ``/metrics``,
``/docs`` (served from local files when ``fastapi-offline`` is installed), and the web page at
``/``. Images are only ever taken from the request: the service never fetches a URL.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from importlib import resources

import numpy as np
from fastapi import Depends, FastAPI, Query, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import APIKeyHeader
from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram,
                               disable_created_metrics, generate_latest)
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser

from .. import __version__
from ..images import ImageError, describe
from ..recognizer import Result
from .batcher import MicroBatcher, QueueFull
from .settings import AUTO_BATCH_SIZES, BATCH_GAIN_NEEDED, ServerSettings

log = logging.getLogger("uvicorn.error")  # shows up with uvicorn's own start-up lines

KNOWN_PATHS = {"/", "/v1/recognize", "/v1/models", "/healthz", "/readyz", "/metrics", "/docs",
               "/openapi.json"}
RAW_TYPES = ("image/", "application/octet-stream")
NO_URL_FETCHING = ("shiwu does not fetch URLs; upload the image itself, as multipart/form-data "
                   "(one or more files) or as the raw request body with an image/* content type")

# ImageError reasons (shiwu.images) that mean "this is not an image format we read" -> 415;
# every other reason (corrupt, truncated, empty, too many pixels) -> 422.
UNSUPPORTED_REASONS = ("not a recognised image format", "SVG is a vector format",
                       "this is an HTML page", "HEIC/AVIF images are not supported")


def image_error_status(reason: str) -> int:
    return 415 if reason.startswith(UNSUPPORTED_REASONS) else 422


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

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.inference.observe(seconds)


class MetricsMiddleware:
    """Counts and times every HTTP request (pure ASGI: no per-request task or body copying)."""

    def __init__(self, app, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"] if scope["path"] in KNOWN_PATHS else "other"
        started = time.perf_counter()
        status = [500]

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.requests.labels(path, scope["method"], str(status[0])).inc()
            self.metrics.latency.labels(path).observe(time.perf_counter() - started)


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
        self.decode_pool: ThreadPoolExecutor | None = None
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

    async def start(self) -> None:
        self.decode_pool = ThreadPoolExecutor(self.settings.decode_threads,
                                              thread_name_prefix="shiwu-decode")
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
        if self.decode_pool is not None:
            self.decode_pool.shutdown(wait=False, cancel_futures=True)

    def decode(self, data: bytes) -> np.ndarray:
        """Runs in the decode pool: bytes -> one preprocessed (3, size, size) array."""
        return self.recognizer.preprocessing(self.recognizer.load(data))

    async def recognize(self, uploads: list[tuple[str, bytes]], topk: int) -> list[Result]:
        # Refuse before decoding, not after: at most max_queue images are in the works at once
        # (decoding, queued or in a batch), which bounds memory and time under overload.
        if self.in_flight + len(uploads) > self.settings.max_queue:
            raise QueueFull(f"{self.in_flight} images are in progress (limit {self.settings.max_queue})")
        self.in_flight += len(uploads)
        try:
            return await self._recognize(uploads, topk)
        finally:
            self.in_flight -= len(uploads)

    async def _recognize(self, uploads: list[tuple[str, bytes]], topk: int) -> list[Result]:
        loop = asyncio.get_running_loop()
        rec = self.recognizer
        arrays = await asyncio.gather(
            *(loop.run_in_executor(self.decode_pool, self.decode, data) for _, data in uploads),
            return_exceptions=True)
        results, good = [], []
        for (name, _), array in zip(uploads, arrays):
            result = Result(name, model=rec.model_name, backend=rec.backend.name,
                            precision=rec.backend.precision)
            results.append(result)
            if isinstance(array, ImageError):
                result.error = array
            elif isinstance(array, BaseException):
                raise array
            else:
                good.append((result, array))
        if good:
            predictions = await self.batcher.submit([array for _, array in good], topk)
            for (result, _), preds in zip(good, predictions):
                result.predictions = preds
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
        loading = asyncio.create_task(service.start())
        try:
            yield
        finally:
            loading.cancel()
            await service.stop()

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
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins),
                           allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "X-API-Key", "Content-Type"])
    app.add_middleware(MetricsMiddleware, metrics=metrics)

    api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False,
                                  description="needed when the server runs with --api-key; "
                                              "`Authorization: Bearer KEY` works too")

    def check_api_key(request: Request, key: str | None = Depends(api_key_header)) -> None:
        if not settings.api_key:
            return
        if not key:
            auth = request.headers.get("authorization", "")
            if auth[:7].lower() == "bearer ":
                key = auth[7:].strip()
        if not key or not hmac.compare_digest(key.encode(), settings.api_key.encode()):
            _fail(metrics, 401, "unauthorized", "missing or wrong API key (X-API-Key header or "
                  "Authorization: Bearer)", headers={"WWW-Authenticate": "Bearer"})

    async def read_body(request: Request, deadline: float) -> bytes:
        limit = settings.max_upload_bytes
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > limit:
            _fail(metrics, 413, "too_large", f"request body is {int(length):,} bytes; "
                  f"the limit is {limit:,}")
        chunks, total = [], 0

        async def consume():
            nonlocal total
            async for chunk in request.stream():
                total += len(chunk)
                if total > limit:
                    _fail(metrics, 413, "too_large", f"request body is over the limit of {limit:,} bytes")
                chunks.append(chunk)

        try:
            await asyncio.wait_for(consume(), max(0.001, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            _fail(metrics, 408, "timeout", f"the request body did not arrive within "
                  f"{settings.request_timeout:g} s")
        return b"".join(chunks)

    async def read_uploads(request: Request, deadline: float) -> list[tuple[str, bytes]]:
        content_type = request.headers.get("content-type", "").strip().lower()
        if content_type and not content_type.startswith(("multipart/form-data",) + RAW_TYPES):
            _fail(metrics, 415, "unsupported_media", f"unsupported content type {content_type!r}. "
                  + NO_URL_FETCHING)
        body = await read_body(request, deadline)
        if not content_type.startswith("multipart/form-data"):
            if not body:
                _fail(metrics, 400, "bad_request", "empty request body: no image")
            return [(describe(body), body)]

        async def stream():
            yield body

        parser = MultiPartParser(request.headers, stream(), max_files=1000, max_fields=100)
        try:
            form = await parser.parse()
        except MultiPartException as exc:
            _fail(metrics, 400, "bad_request", f"malformed multipart body: {exc.message}")
        try:
            files = [value for _, value in form.multi_items() if not isinstance(value, str)]
            if not files:
                _fail(metrics, 400, "bad_request", "no file in the multipart body. " + NO_URL_FETCHING)
            if len(files) > settings.max_images:
                _fail(metrics, 413, "too_many_images", f"{len(files)} images in one request; "
                      f"the limit is {settings.max_images}")
            uploads = []
            for index, upload in enumerate(files):
                data = await upload.read()
                name = os.path.basename((upload.filename or "").replace("\\", "/"))[:200]
                uploads.append((name or f"<upload {index + 1}: {len(data)} bytes>", data))
            return uploads
        finally:
            await form.close()

    # the embedding routes (/v1/embed, /v1/search, /v1/gallery, thumbnails) share these
    app.state.read_uploads, app.state.check_api_key = read_uploads, check_api_key
    from .vectors import install
    install(app)

    @app.post("/v1/recognize", openapi_extra=RECOGNIZE_BODY, tags=["recognition"],
              summary="识别图片 · recognise one or more images",
              responses={401: {"description": "missing or wrong API key"},
                         408: {"description": "the body arrived too slowly"},
                         413: {"description": "body too large, or too many images"},
                         415: {"description": "not an image format shiwu reads, or not an upload"},
                         422: {"description": "corrupt image, or too many pixels (decompression bomb)"},
                         503: {"description": "model still loading, or too busy: retry later"},
                         504: {"description": "no answer within the request timeout"}})
    async def recognize(request: Request,
                        topk: int = Query(5, ge=1, le=settings.max_topk,
                                          description="labels per image, best first"),
                        _auth: None = Depends(check_api_key)):
        """Upload images as `multipart/form-data` (any field names, one or more files) or one image
        as the raw body. Answers `{"results": [...]}`, one DESIGN.md JSON object per image in
        upload order. When every image failed the status is the first failure's (415 not an
        image, 422 corrupt or too many pixels) and `detail` gives its reason."""
        deadline = time.monotonic() + settings.request_timeout
        if not service.ready:
            _fail(metrics, 503, "not_ready", service.error or "the model is still loading",
                  headers={"Retry-After": "2"})
        uploads = await read_uploads(request, deadline)
        try:
            results = await asyncio.wait_for(service.recognize(uploads, topk),
                                             max(0.001, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            _fail(metrics, 504, "timeout", f"no answer within {settings.request_timeout:g} s")
        except QueueFull as exc:
            _fail(metrics, 503, "overloaded", f"server busy: {exc}", headers={"Retry-After": "1"})
        except Exception as exc:
            log.exception("shiwu: inference failed")
            _fail(metrics, 500, "inference", f"inference failed: {type(exc).__name__}: {exc}")
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

    @app.get("/v1/models", tags=["info"], summary="the model being served, and the limits")
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
                       "request_timeout_s": settings.request_timeout},
            "batching": {"max_batch_size": service.max_batch_size, "max_wait_ms": settings.max_wait_ms,
                         "chosen_by": "setting" if settings.max_batch_size else "measurement",
                         "measurement": service.batch_measurement},
            "version": __version__,
        }

    @app.get("/healthz", tags=["info"], summary="the process is alive")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz", tags=["info"], summary="the model is loaded and warmed up")
    async def readyz():
        if service.ready:
            return {"status": "ready", "model": service.recognizer.model_name}
        if service.error:
            return JSONResponse({"status": "failed", "detail": service.error}, status_code=503)
        return JSONResponse({"status": "loading"}, status_code=503)

    @app.get("/metrics", tags=["info"], summary="Prometheus metrics")
    async def prometheus():
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    page = (resources.files("shiwu.server") / "static" / "index.html").read_text(encoding="utf-8")
    page_headers = {
        # Everything the page needs is inline or same-origin: no CDN, works offline.
        "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; "
                                   "style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
                                   "connect-src 'self'; frame-ancestors 'none'",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }

    @app.get("/", include_in_schema=False)
    async def index():
        return HTMLResponse(page, headers=page_headers)

    return app


def app_from_env() -> FastAPI:
    """uvicorn factory (``--factory shiwu.server.app:app_from_env``): settings from the
    environment, as ``shiwu serve`` passes them to its worker processes."""
    return create_app(ServerSettings.from_env())
