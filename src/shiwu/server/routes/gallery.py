"""GET /v1/gallery and POST /v1/gallery/{label}: classes taught by example photos."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from ..deps import ApiKeyDep, ServiceDep, DeclaredQuery
from ..embeddings import embed_uploads
from ..errors import fail, when_every_image_failed
from ..schemas import UPLOAD_BODY, UPLOAD_RESPONSES, GalleryAdded, GalleryInfo, problems
from ..served_gallery import NO_GALLERY

log = logging.getLogger(__name__)

router = APIRouter(tags=["gallery"], dependencies=[DeclaredQuery])


def _classes(counts: dict[str, int]) -> list[dict]:
    return [{"label": label, "examples": n} for label, n in counts.items()]


@router.get("/v1/gallery", response_model=GalleryInfo,
            summary="教它认识 · the classes taught by example photos")
async def gallery_list(service: ServiceDep):
    """`{"configured", "ready", "mode", "min_similarity", "classes": [{"label", "examples"}]}`."""
    gallery, settings = service.gallery, service.settings
    if not gallery.configured:
        return JSONResponse({"configured": False, "classes": []})
    await service.refresh_gallery()
    rec = service.recognizer
    return JSONResponse({"configured": True, "ready": service.ready, "mode": settings.gallery_mode,
                         "min_similarity": getattr(rec, "min_similarity", settings.min_similarity),
                         "classes": _classes(gallery.counts())})


@router.post("/v1/gallery/{label:path}", openapi_extra=UPLOAD_BODY, response_model=GalleryAdded,
             summary="教它认识 · add example photos of a class",
             responses={**UPLOAD_RESPONSES, **problems(
                 _400="not a usable class name (a path, too long, a Windows device name, a file "
                      "in the gallery folder, ...)",
                 _409="the server has no gallery (--gallery)")})
async def gallery_add(service: ServiceDep, label: str, request: Request, _auth: ApiKeyDep):
    """Example photos of class `label` (any language; one plain name), uploaded as for
    /v1/recognize. They are stored in the gallery folder (`DIR/label/`, named by content)
    and /v1/recognize uses them from the next request on, in every worker process. Unreadable
    photos are listed in `skipped` and not stored. Answers `{"label", "added": [{"image",
    "file"}], "skipped": [{"image", "error"}], "examples", "classes": [{"label", "examples"}]}`."""
    from ...gallery import GalleryError, class_folder

    metrics, gallery = service.metrics, service.gallery
    if not gallery.configured:
        fail(metrics, 409, "no_gallery", NO_GALLERY)
    try:
        label = class_folder(gallery.folder, label).name
    except GalleryError as exc:
        fail(metrics, 400, "bad_label", str(exc))
    service.require_ready()
    items = await embed_uploads(request, service, keep=True)
    if isinstance(items, Response):
        return items
    async with gallery.lock:
        try:
            added, skipped = await asyncio.to_thread(gallery.add_examples, label, items)
        except GalleryError as exc:  # the folder changed under us (a file took the class's name)
            fail(metrics, 400, "bad_label", str(exc))
    counts = gallery.counts()
    body = {"label": label, "added": added, "skipped": skipped, "examples": counts.get(label, 0),
            "classes": _classes(counts)}
    if not added:
        if any(i.result.error is None for i in items):  # only photos it already had
            return JSONResponse(body)
        return when_every_image_failed([i.result for i in items], body, "no photo could be read, nothing "
                                       "was added: " + "; ".join(f"{s['image']}: {s['error']}" for s in skipped))
    log.info("gallery: %d example(s) of %s added", len(added), label)
    return JSONResponse(body)


# {label:path} is ".*", whose "." stops at a line break: "a%0Ab" found no route (404) instead of
# the 400 every other control character gets; one segment with anything but "/" reaches it too
router.post("/v1/gallery/{label}", response_model=GalleryAdded, include_in_schema=False)(gallery_add)
