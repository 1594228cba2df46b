"""Builds the ASGI app of `shiwu serve`: the service, the middleware, the routers, and the
lifespan (load the model in the background, drain on SIGTERM). Nothing imports this module:
uvicorn finds ``app_from_env`` by name (``shiwu.server.run``), tests call ``create_app``.

Endpoints (see ``routes/``): ``POST /v1/recognize``, ``/v1/embed``, ``/v1/search``,
``/v1/gallery/{label}``; ``GET /v1/models``, ``/v1/index``, ``/v1/gallery``,
``/v1/thumbnails/{id}``, ``/healthz``, ``/readyz``, ``/metrics``, ``/docs`` (served from local
files when ``fastapi-offline`` is installed), and the web page at ``/``. Images are only ever
taken from the request: the service never fetches a URL.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from ..version import __version__
from .access import AccessMiddleware
from .metrics import Metrics
from .middleware import JSONCORSMiddleware, MetricsMiddleware, SecurityMiddleware
from .protocol import install_log_filters, resource_exception_handler
from .routes import duplicates, gallery, info, recognize, search
from .schemas import UPLOAD_BODY
from .service import Service
from .settings import ServerSettings

log = logging.getLogger(__name__)


def create_app(settings: ServerSettings | None = None, *, recognizer=None) -> FastAPI:
    """The ASGI app. ``recognizer``: an already built Recognizer to serve (else one is loaded
    from ``settings`` in the background at start-up; ``/readyz`` says when it is ready)."""
    settings = settings or ServerSettings()
    service = Service(settings, Metrics(), recognizer)

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
        # /docs (Swagger UI) only: ReDoc's search runs in a blob: worker and its logo comes from
        # the network, both refused by the page's CSP: it loaded broken
        app = FastAPIOffline(redoc_url=None, **kwargs)
    except ImportError:
        app = FastAPI(redoc_url=None, **kwargs)
    app.state.service = service
    app.state.settings = settings

    # Added innermost first: a request meets metrics, then the security headers, then the
    # Host/Origin check, then CORS (when asked for), then the routes.
    if settings.cors_origins:
        app.add_middleware(JSONCORSMiddleware, allow_origins=list(settings.cors_origins),
                           allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "X-API-Key", "Content-Type"])
    app.add_middleware(AccessMiddleware, settings=settings, metrics=service.metrics)
    app.add_middleware(SecurityMiddleware)  # inside metrics: its JSON 500 is counted as a 500
    app.add_middleware(MetricsMiddleware, metrics=service.metrics)

    for module in (recognize, search, duplicates, gallery, info):
        app.include_router(module.router)
    app.add_exception_handler(RequestValidationError, _validation_error_in_one_line)
    _document_topk_limit(app, settings.max_topk)
    _document_errors_as_sent(app)
    return app


async def _validation_error_in_one_line(request, exc: RequestValidationError) -> JSONResponse:
    """A query parameter FastAPI checks (?size=, ?tier=, ?topk= of /v1/search) answers as every other
    error does, ``{"detail": "text"}``, not FastAPI's list of error objects."""
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first.get("loc", ())[1:]) or "request"
    return JSONResponse({"detail": f"{where}: {first.get('msg', 'invalid')}"}, status_code=422)


def _document_errors_as_sent(app: FastAPI) -> None:
    """/openapi.json says what is sent: a 422 is ``{"detail": "text"}`` (Problem, as every
    error here; FastAPI documents its own list of error objects, which this app never sends),
    and any route may answer 500 with a Problem (SecurityMiddleware's JSON for a bug)."""
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema:
            return app.openapi_schema
        schema = build()
        problem = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}
        for item in schema.get("paths", {}).values():
            for operation in item.values():
                answers = operation.setdefault("responses", {})
                if "422" in answers and "HTTPValidationError" in str(answers["422"]):
                    answers["422"] = {"description": "a query parameter of the wrong type or out of range",
                                      **problem}
                answers.setdefault("500", {"description": "an error in shiwu itself (logged)", **problem})
        for unused in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(unused, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi


def _document_topk_limit(app: FastAPI, max_topk: int) -> None:
    """/v1/recognize reads ``topk`` by hand (deps.recognize_topk); /docs shows this app's limit."""
    for route in app.routes:
        if getattr(route, "path", None) == "/v1/recognize":
            route.openapi_extra = {**UPLOAD_BODY, "parameters": [recognize._topk_parameter(max_topk)]}


def _warn_if_descriptors_are_short(settings: ServerSettings) -> None:
    """Each connection is a descriptor, and so is each upload spooled to disk: with fewer than
    --max-connections free, the cap cannot work and accept() fails first."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):
        return
    if soft != resource.RLIM_INFINITY and soft < settings.max_connections + 64:
        log.warning("the open-file limit (%d) is below --max-connections (%d) + 64; "
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
    environment, as ``shiwu serve`` passes them to its worker processes (which also need
    shiwu's log records shaped as the command line shapes them)."""
    from . import configure_logging

    settings = ServerSettings.from_env()
    configure_logging(settings.log_level)
    return create_app(settings)
