"""POST /v1/recognize and POST /v1/embed: images in, one answer per image out."""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from ..deps import ACCEPTED_QUERY, ApiKeyDep, DeclaredQuery, RecognizeTopK, ServiceDep
from ..embeddings import embed_uploads
from ..errors import count_images, when_every_image_failed
from ..schemas import UPLOAD_BODY, UPLOAD_RESPONSES, EmbedAnswer, RecognizeAnswer, problems
from ..uploads import take_uploads

router = APIRouter()


def _topk_parameter(max_topk: int) -> dict:
    return {"name": "topk", "in": "query", "required": False,
            "schema": {"type": "integer", "minimum": 1, "maximum": max_topk, "default": 5},
            "description": "labels per image, best first (a whole number). " + ACCEPTED_QUERY}


@router.post("/v1/recognize", tags=["recognition"], response_model=RecognizeAnswer,
             openapi_extra={**UPLOAD_BODY, "parameters": [_topk_parameter(100)]},
             summary="识别图片 · recognise one or more images",
             responses={**UPLOAD_RESPONSES, **problems(
                 _400="malformed body, unknown or repeated query parameter",
                 _415="not an image format shiwu reads, or not an upload",
                 _422="corrupt image, too many pixels (decompression bomb), or topk not a whole "
                      "number in range",
                 _503="model still loading, too busy (bytes, pixels or images in flight), or "
                      "shutting down: retry later")})
async def recognize(service: ServiceDep, request: Request, _auth: ApiKeyDep, topk: RecognizeTopK):
    """Upload images as `multipart/form-data` (any field names, one or more files) or one image
    as the raw body. Answers `{"results": [...]}`, one object per image in upload order, as
    `shiwu predict --json` writes it. When every image failed the status is the first
    failure's (415 not an image, 422 corrupt or too many pixels) and `detail` gives its
    reason. """ + ACCEPTED_QUERY
    await service.refresh_gallery()
    results = await take_uploads(request, service, lambda uploads: service.recognize(uploads, topk))
    if isinstance(results, Response):  # the client went away
        return results
    body = {"results": [r.to_dict() for r in results]}
    count_images(service.metrics, results)
    return when_every_image_failed(results, body) or JSONResponse(body)


@router.post("/v1/embed", openapi_extra=UPLOAD_BODY, tags=["embeddings"], response_model=EmbedAnswer,
             responses={**UPLOAD_RESPONSES, **problems(_400="an empty body, or a query parameter or form field "
                                                            "it does not take")},
             dependencies=[DeclaredQuery],
             summary="图片向量 · L2-normalised embeddings of one or more images")
async def embed(service: ServiceDep, request: Request, _auth: ApiKeyDep):
    """Images as for /v1/recognize. Answers `{"model", "dimension", "backend", "precision",
    "results": [{"image", "embedding": [D floats, unit length], "error"}]}` in upload order;
    cosine similarity of two images is the dot product of their embeddings."""
    service.require_ready()
    rec = service.recognizer
    items = await embed_uploads(request, service)
    if isinstance(items, Response):  # the client went away
        return items
    results = []
    for item in items:
        r = item.result
        vector = None if r.embedding is None else np.round(r.embedding.astype(np.float64), 7).tolist()
        results.append({"image": r.image, "embedding": vector, "error": r.to_dict()["error"]})
    dimension = next((len(r["embedding"]) for r in results if r["embedding"] is not None),
                     service.embedding_dimension)
    body = {"model": rec.model_name, "dimension": dimension, "backend": rec.backend.name,
            "precision": rec.backend.precision, "results": results}
    return when_every_image_failed([i.result for i in items], body) or JSONResponse(body)
