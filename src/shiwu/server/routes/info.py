"""GET /v1/models, /healthz, /readyz, /metrics and the web page at /."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, JSONResponse, Response

from ...version import __version__
from ..deps import ServiceDep
from ..metrics import CONTENT_TYPE_LATEST, generate_latest
from ..schemas import Health, ModelsAnswer, Readiness
from ..settings import BIG_PIXELS

router = APIRouter(tags=["info"])


def get_and_head(path: str, **documented):
    """GET ``path`` as documented, and HEAD on the same function left out of /openapi.json: one
    operation per route there (GET and HEAD shared an operationId, which code generators refuse)."""
    def register(function):
        router.api_route(path, methods=["HEAD"], include_in_schema=False)(function)
        return router.get(path, **documented)(function)
    return register


@get_and_head("/v1/models", response_model=ModelsAnswer,
                  summary="the model being served, and the limits")
async def models(service: ServiceDep):
    from ...models.registry import get_model

    settings, rec = service.settings, service.recognizer
    spec = rec.spec if rec is not None else get_model(settings.model)
    size = rec.preprocessing.size if rec is not None else (settings.size or spec.preprocessing.size)
    return JSONResponse({
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
    })


@get_and_head("/healthz", response_model=Health,
                  summary="the process is alive and its threads are not hung (503 when they are)",
                  responses={503: {"model": Health, "description": "every thread of a pool is stuck"}})
async def healthz(service: ServiceDep):
    stuck = service.stuck_work()
    if stuck:
        return JSONResponse({"status": "stuck", "detail": stuck}, status_code=503)
    return JSONResponse({"status": "ok"})


@get_and_head("/readyz", response_model=Readiness,
                  summary="the model is loaded and warmed up (503 while loading or shutting down)",
                  responses={503: {"model": Readiness, "description": "loading, failed or draining"}})
async def readyz(service: ServiceDep):
    if service.draining:  # load balancers stop sending here at once
        return JSONResponse({"status": "draining"}, status_code=503)
    if service.ready:
        return JSONResponse({"status": "ready", "model": service.recognizer.model_name})
    if service.error:
        return JSONResponse({"status": "failed", "detail": service.error}, status_code=503)
    return JSONResponse({"status": "loading"}, status_code=503)


@router.get("/metrics", summary="Prometheus metrics",
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "the metrics"}})
async def prometheus(service: ServiceDep):
    return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@lru_cache(maxsize=1)
def _page() -> str:
    return (resources.files("shiwu.server") / "static" / "index.html").read_text(encoding="utf-8")


# The page's CSP (everything inline or same-origin: no CDN) and the other security headers
# come from SecurityMiddleware, as for every response.
@router.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
async def index():
    return HTMLResponse(_page())
