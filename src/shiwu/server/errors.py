"""How `shiwu serve` refuses: every error is JSON ``{"detail": "..."}`` with a status the API
docs list, and is counted in ``shiwu_errors_total`` by kind."""

from __future__ import annotations

from typing import NoReturn

from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from ..images import ImageError

NO_URL_FETCHING = ("shiwu does not fetch URLs; upload the image itself, as multipart/form-data "
                   "(one or more files) or as the raw request body with an image/* content type")
# Too busy or shutting down: retry soon, on a new connection (another instance may take it).
BUSY_HEADERS = {"Retry-After": "1", "Connection": "close"}

# ImageError reasons (shiwu.images) that mean "this is not an image format we read" -> 415;
# every other reason (corrupt, truncated, empty, too many pixels) -> 422.
UNSUPPORTED_REASONS = ("not a recognised image format", "SVG is a vector format",
                       "this is an HTML page", "HEIC/AVIF images are not supported")


def image_error_status(reason: str) -> int:
    return 415 if reason.startswith(UNSUPPORTED_REASONS) else 422


def fail(metrics, status: int, kind: str, detail: str, headers=None) -> NoReturn:
    """Count one error of ``kind`` and answer ``status`` with ``detail``."""
    metrics.errors.labels(kind).inc()
    raise HTTPException(status, detail, headers=headers)


def when_every_image_failed(results: list, body: dict, detail: str | None = None) -> JSONResponse | None:
    """The answer when every image of a request failed: the first failure's status (415 not an
    image, 422 corrupt or too many pixels), its reason (or ``detail``) beside ``body``; None
    when at least one image was read."""
    failed = [r for r in results if r.error is not None]
    if not results or len(failed) < len(results):
        return None
    error = failed[0].error
    reason = error.reason if isinstance(error, ImageError) else str(error)
    return JSONResponse({"detail": detail or reason, **body}, status_code=image_error_status(reason))


def count_images(metrics, results: list) -> None:
    """The images of one answer in shiwu_images_total (ok / error) and shiwu_errors_total."""
    failed = sum(r.error is not None for r in results)
    metrics.images.labels("ok").inc(len(results) - failed)
    if failed:
        metrics.images.labels("error").inc(failed)
        metrics.errors.labels("image_error").inc(failed)
