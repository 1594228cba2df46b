"""POST /v1/search, GET /v1/index and GET /v1/thumbnails/{id}: the index served by --index."""

from __future__ import annotations

import asyncio
import re
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from ..deps import ApiKeyDep, ServiceDep, DeclaredQuery
from ..embeddings import embed_uploads
from ..errors import fail, when_every_image_failed
from ..schemas import UPLOAD_BODY, UPLOAD_RESPONSES, IndexInfo, SearchAnswer, problems
from ..served_index import NO_INDEX
from ..settings import ServerSettings

router = APIRouter(tags=["embeddings"], dependencies=[DeclaredQuery])

THUMBNAIL_SIZE = 256
MAX_TEXT_LENGTH = 200  # characters per search text; Chinese-CLIP reads 52 tokens anyway
ROW_ID = re.compile(r"[0-9]{1,19}")  # row ids are non-negative int64 (shiwu.index.rows.row_id)


def _has_body(request: Request) -> bool:
    length = request.headers.get("content-length")
    return bool(request.headers.get("transfer-encoding")) or (length is not None and length.strip() != "0")


def _require_index(service) -> None:
    if service.index.index is None:
        fail(service.metrics, 409, "no_index", NO_INDEX)


def _check_texts(service, texts: list[str]) -> None:
    metrics, settings, index = service.metrics, service.settings, service.index
    if not index.text_search:
        fail(metrics, 400, "no_text_search",
             f"searching by words needs an index built with a Chinese-CLIP model (it has a text "
             f"tower); this index was built with {index.spec.name}, which has none: search with a photo")
    if len(texts) > settings.max_images:
        fail(metrics, 413, "too_many_texts", f"{len(texts)} texts; the limit is {settings.max_images}")
    bad = next((t for t in texts if not t or len(t) > MAX_TEXT_LENGTH), None)
    if bad is not None:
        fail(metrics, 400, "bad_text", f"a search text must have 1 to {MAX_TEXT_LENGTH} characters, "
             f"not {len(bad)}")


@router.post("/v1/search", response_model=SearchAnswer,
             openapi_extra={**UPLOAD_BODY, "requestBody": {**UPLOAD_BODY["requestBody"], "required": False}},
             summary="找相似 · the indexed photos closest to images or words",
             responses={**UPLOAD_RESPONSES, **problems(
                 _400="no query, or text asked of an index whose model has no text tower",
                 _409="the server has no index (--index)")})
async def search(service: ServiceDep, request: Request, _auth: ApiKeyDep,
                 topk: Annotated[int, Query(ge=1, le=ServerSettings.max_topk,
                                            description="matches per query")] = 10,
                 text: Annotated[list[str] | None, Query(description="words to search for (repeatable); "
                                                         "needs a Chinese-CLIP index")] = None):
    """Images in the body (as for /v1/recognize) and/or `?text=` queries. Answers
    `{"model", "index": {"rows"}, "results": [...]}`: per image `{"image", "matches", "error"}`,
    then per text `{"text", "matches", "error"}`; each match `{"id", "image", "score",
    "label", "thumbnail"}`, best first (score: cosine similarity; id: a string, as row ids
    exceed JavaScript's exact integers; thumbnail: the URL of its small JPEG)."""
    metrics, index = service.metrics, service.index
    service.require_ready()
    _require_index(service)
    if topk > service.settings.max_topk:
        fail(metrics, 422, "bad_request", f"topk must be at most {service.settings.max_topk}")
    texts = [t.strip() for t in (text or [])]
    if texts:
        _check_texts(service, texts)
    if not texts and not _has_body(request):
        fail(metrics, 400, "bad_request", "nothing to search for: upload a photo (multipart/form-data "
             "or the raw body), or give ?text= with a Chinese-CLIP index")
    items = []
    if _has_body(request) or not texts:
        items = await embed_uploads(request, service)
        if isinstance(items, Response):
            return items
    results = []
    good = [i for i in items if i.result.error is None]
    found = iter(await asyncio.to_thread(index.search, np.stack([i.result.embedding for i in good]), topk)
                 if good else [])
    for item in items:
        error = item.result.to_dict()["error"]
        results.append({"image": item.result.image, "matches": [] if error else next(found), "error": error})
    if texts:
        try:
            vectors = await asyncio.to_thread(index.embed_texts, texts)
        except Exception as exc:  # the text tower refused the words: say which
            fail(metrics, 400, "bad_text", f"cannot search for these words: {exc}")
        for query, matches in zip(texts, await asyncio.to_thread(index.search, vectors, topk)):
            results.append({"text": query, "matches": matches, "error": None})
    body = {"model": index.spec.name, "index": {"rows": index.rows()}, "results": results}
    return (None if texts else when_every_image_failed([i.result for i in items], body)) or JSONResponse(body)


@router.get("/v1/index", response_model=IndexInfo, summary="the index /v1/search uses, if any")
async def index_info(service: ServiceDep):
    index = service.index
    if index.index is None:  # none given, or the model (and with it the index) still loading
        return JSONResponse({"configured": index.configured, "ready": False, "text_search": False})
    manifest = index.index.manifest
    return JSONResponse({"configured": True, "ready": True, "model": manifest.model,
                         "dimension": manifest.dimension, "rows": index.rows(),
                         "text_search": index.text_search})


@router.get("/v1/thumbnails/{row_id}", summary="a search match's thumbnail (JPEG), by its row id",
            responses={200: {"content": {"image/jpeg": {}}, "description": "the JPEG"},
                       **problems(_401="missing or wrong API key",
                                  _404="not a row of the index, or its file is gone, changed, or "
                                       "reached through a link now",
                                  _409="the server has no index (--index)",
                                  _504="the file could not be read within the request timeout")})
async def thumbnail(service: ServiceDep, row_id: str, _auth: ApiKeyDep,
                    size: Annotated[int, Query(ge=32, le=512)] = THUMBNAIL_SIZE):
    """Only rows of the served index, named by the `id` of a search match: never a path."""
    metrics = service.metrics
    service.require_ready()
    _require_index(service)
    if not ROW_ID.fullmatch(row_id) or int(row_id) >= 2 ** 63:
        fail(metrics, 404, "not_found", "a thumbnail is named by the id of a row of the index "
             "(a search match's \"id\"), not by a path")
    outcome = await service.index.thumbnail(int(row_id), size, service.settings.request_timeout)
    if outcome is None:
        fail(metrics, 504, "timeout", f"the indexed file could not be read within "
             f"{service.settings.request_timeout:g} s")
    if isinstance(outcome, str):
        fail(metrics, 404, "not_found", outcome)
    return Response(outcome, media_type="image/jpeg",
                    headers={"Cache-Control": "private, max-age=300", "X-Content-Type-Options": "nosniff"})
