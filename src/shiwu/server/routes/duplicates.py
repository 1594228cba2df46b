"""GET /v1/duplicates: the duplicate groups of the index served by --index, each with its tier
(exact, near, similar), as `shiwu dedupe --index` finds them."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from ..deps import ApiKeyDep, ServiceDep, DeclaredQuery
from ..duplicates import MAX_ROWS, Busy
from ..errors import BUSY_HEADERS, fail
from ..schemas import DuplicatesAnswer, problems
from ..served_index import NO_INDEX

router = APIRouter(tags=["embeddings"], dependencies=[DeclaredQuery])

# index.dedupe.DEFAULT_DUPLICATE_THRESHOLD, spelled out: importing it would load faiss at start
DEFAULT_THRESHOLD = 0.92
RETRY_SECONDS = 5  # a search still running: the page asks again after this


@router.get("/v1/duplicates", response_model=DuplicatesAnswer,
            summary="重复 · groups of copies in the index: exact, near or similar",
            responses=problems(_401="missing or wrong API key",
                               _409="the server has no index (--index)",
                               _413=f"the index has more than {MAX_ROWS} rows: use `shiwu dedupe --index`",
                               _503="model still loading, another duplicates search running, or this "
                                    "one still running after the request timeout: retry later"))
async def duplicates(service: ServiceDep, _auth: ApiKeyDep,
                     tier: Annotated[Literal["exact", "near", "similar"], Query(
                         description="the loosest tie reported: exact (same bytes or pixels), near (also "
                                     "resized, re-encoded, re-lit or grey copies: perceptual hash), similar "
                                     "(also embeddings at least `threshold` alike: crops, bursts)")] = "similar",
                     threshold: Annotated[float, Query(ge=0.0, le=1.0, description="cosine similarity for "
                                                       "the similar tier")] = DEFAULT_THRESHOLD):
    """Reads every indexed file once (its perceptual hash) on a background thread; an answer is
    reused for a minute while the index keeps its rows. Files changed or gone since they were
    indexed take no part, and files that cannot be read or decoded are in no exact or near group:
    each is listed in `unread` with why. Each group: `{"tier", "images": [{"path", "size", "match", "id",
    "thumbnail"}, ...]}`, the representative (largest file) first with `match` null, then each
    copy with how it is tied to it."""
    metrics, index = service.metrics, service.index
    service.require_ready()
    if index.index is None:
        fail(metrics, 409, "no_index", NO_INDEX)
    rows = index.rows()
    if rows > MAX_ROWS:
        fail(metrics, 413, "too_many_rows", f"the index has {rows} rows; the web page looks for duplicates "
             f"in at most {MAX_ROWS}: run `shiwu dedupe --index {index.settings.index} --tier {tier}`")
    try:
        found = await index.duplicates.groups(tier, round(threshold, 4), rows, service.settings.request_timeout)
    except Busy as exc:
        fail(metrics, 503, "busy", str(exc), headers={**BUSY_HEADERS, "Retry-After": str(RETRY_SECONDS)})
    if found is None:
        fail(metrics, 503, "busy", f"still looking for duplicates after {service.settings.request_timeout:g} s; "
             f"the search goes on: ask again in a little while for its answer",
             headers={**BUSY_HEADERS, "Retry-After": str(RETRY_SECONDS)})
    return JSONResponse({"model": index.spec.name, "index": {"rows": rows}, "tier": tier,
                         "threshold": threshold, **found})
