"""The embedding routes of ``shiwu serve``: embed, search an index, teach classes by example.

    POST /v1/embed                 images -> L2-normalised embeddings, one per image
    POST /v1/search                images and/or ?text= -> the closest rows of --index INDEX
    GET  /v1/index                 whether an index is served, its model, rows, text search
    GET  /v1/thumbnails/{id}       a small JPEG of one row of the index (by row id only)
    POST /v1/gallery/{label}       example photos of a class -> the --gallery DIR folder
    GET  /v1/gallery               the gallery's classes and example counts

Every image goes through the same decode pool and micro-batcher as /v1/recognize: an embedding
is the second output of the same inference (``MicroBatcher.submit(..., embed=True)``), so
recognising, embedding and searching share batches. The gallery is the one ``shiwu predict
--gallery`` reads (one sub-folder per class); once photos are added, /v1/recognize names
photos by it (merge or replace, as ``--gallery-mode``) because the recognizer's gallery is
swapped for the grown one.

Thumbnails are only ever made from files that are rows of the index, looked up by their row
id: no route takes a path from the client. The file must still be the one indexed (same size
and modification time, not replaced by a link), and what is sent is a re-encoded JPEG of its
pixels, never the file's own bytes.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response

from ..images import ImageError
from ..recognizer import Result
from .app import _fail, image_error_status

log = logging.getLogger("uvicorn.error")

THUMBNAIL_SIZE = 256
MAX_TEXT_LENGTH = 200  # characters per search text; Chinese-CLIP reads 52 tokens anyway
ROW_ID = re.compile(r"[0-9]{1,19}")  # row ids are non-negative int64 (shiwu.index.rows.row_id)
NO_INDEX = ("this server has no index: start it with `shiwu serve --index INDEX`, INDEX built by "
            "`shiwu index PHOTOS... --out INDEX` with the same --model")
NO_GALLERY = ("this server has no gallery folder: start it with `shiwu serve --gallery DIR` "
              "(DIR is created if missing; one sub-folder per class)")

UPLOAD_RESPONSES = {401: {"description": "missing or wrong API key"},
                    408: {"description": "the body arrived too slowly"},
                    413: {"description": "body too large, or too many images"},
                    415: {"description": "not an image format shiwu reads (every image)"},
                    422: {"description": "corrupt image or too many pixels (every image)"},
                    503: {"description": "model still loading, or too busy: retry later"},
                    504: {"description": "no answer within the request timeout"}}


@dataclass
class Embedded:
    """One upload after decode and inference."""

    result: Result                   # predictions, embedding, or the error
    data: bytes
    image_format: str | None = None  # as Pillow names it (gallery: kept as uploaded)
    image: object = None             # the decoded RGB image (gallery: formats stored as PNG)


class Vectors:
    """What the embedding routes share: the served index, the gallery folder and their locks."""

    def __init__(self, app: FastAPI):
        self.settings = app.state.settings
        self.service = app.state.service
        self.metrics = self.service.metrics
        self.take_uploads = app.state.take_uploads  # /v1/recognize's admission and limits
        self.index = None
        self.dimension: int | None = None
        self.text_search = False
        self.spec = None
        # One search or row lookup at a time: the index builds its faiss structure lazily and
        # reloads it when another process (`shiwu index`) added rows, which is not safe to race.
        self.index_lock = threading.Lock()
        self.text_lock = threading.Lock()  # the text tower is one torch module
        self.gallery_folder = Path(self.settings.gallery).resolve() if self.settings.gallery else None
        self.gallery_lock = asyncio.Lock()  # gallery additions one at a time (files, then swap)

    # -- start-up (Service.on_load: on the loading thread, before /readyz says ready) ------

    def load(self, recognizer) -> None:
        s = self.settings
        self.spec = recognizer.spec
        if s.index or self.gallery_folder:
            recognizer.backend.require_embedding()  # a model without embeddings says why, now
            size = recognizer.preprocessing.size
            probe = np.zeros((1, 3, size, size), np.float32)
            self.dimension = int(recognizer.logits_and_embeddings(probe)[1].shape[1])
        if s.index:
            from ..index import IndexMismatchError, open_index
            from ..indexing import preprocessing_identity

            # vectors made another way (size, preprocessing, precision) are refused at start
            index = open_index(s.index, model=recognizer.spec.key, weights_hash=recognizer.spec.fingerprint(),
                               preprocessing=preprocessing_identity(recognizer.preprocessing),
                               precision=recognizer.backend.precision)
            if index.manifest.dimension != self.dimension:
                index.close()
                raise IndexMismatchError(f"index {s.index} holds {index.manifest.dimension}-d vectors; "
                                         f"{recognizer.model_name} here gives {self.dimension}-d: build the "
                                         "index with the same --model and --size")
            self.index = index
            self.text_search = recognizer.spec.text_encoder is not None
            log.info("shiwu: searching index %s (%d rows, %d-d%s)", s.index, len(index),
                     index.manifest.dimension, ", text search" if self.text_search else "")
        if self.gallery_folder:
            from ..gallery import DEFAULT_MIN_SIMILARITY, MODES, EmbeddingCache, GalleryError

            if s.gallery_mode not in MODES:
                raise GalleryError(f"gallery mode must be one of {', '.join(MODES)}, not {s.gallery_mode!r}")
            self.cache = EmbeddingCache(recognizer)  # where added examples' vectors are kept
            recognizer.gallery_mode = s.gallery_mode
            recognizer.min_similarity = DEFAULT_MIN_SIMILARITY if s.min_similarity is None else s.min_similarity
            self.gallery_folder.mkdir(parents=True, exist_ok=True)
            if any(p.is_dir() and not p.name.startswith(".") for p in self.gallery_folder.iterdir()):
                # an empty class folder or one with no readable photo: GalleryError, said at start
                recognizer.use_gallery(str(self.gallery_folder), mode=s.gallery_mode,
                                       min_similarity=recognizer.min_similarity)
                log.info("shiwu: gallery %s: %d classes, %d examples (%d embedded now)",
                         self.gallery_folder, len(recognizer.gallery.labels), len(recognizer.gallery),
                         recognizer.gallery.embedded_now)

    # -- shared steps ------------------------------------------------------------------------

    def require_ready(self) -> None:
        if not self.service.ready:
            _fail(self.metrics, 503, "not_ready", self.service.error or "the model is still loading",
                  headers={"Retry-After": "2"})

    async def embed(self, request: Request, *, topk: int = 1, keep: bool = False) -> list[Embedded] | Response:
        """Each upload of ``request`` decoded and embedded (per-image errors kept), through
        /v1/recognize's admission, limits and deadline (``take_uploads``); a Response when the
        client went away. ``keep``: each good item also gets its bytes and format (the gallery
        stores them)."""
        async def work(uploads):
            results = await self.service.recognize(uploads, topk, embed=True)
            items = [Embedded(result, _bytes_of(upload) if keep and result.error is None else b"")
                     for result, upload in zip(results, uploads)]
            if keep:
                await asyncio.to_thread(self._describe, items)
            failed = sum(item.result.error is not None for item in items)
            self.metrics.images.labels("ok").inc(len(items) - failed)
            if failed:
                self.metrics.images.labels("error").inc(failed)
                self.metrics.errors.labels("image_error").inc(failed)
            return items

        return await self.take_uploads(request, work)

    def _describe(self, items: list[Embedded]) -> None:
        """On a worker thread: the format of each good photo, and its pixels when the gallery
        stores it as PNG (formats it does not keep as uploaded). Decoded once more: gallery
        additions are few and small next to what they save."""
        from PIL import Image

        from ..gallery import KEPT_FORMATS

        for item in items:
            if item.result.error is not None:
                continue
            with Image.open(io.BytesIO(item.data)) as header:  # the header only: it decoded before
                item.image_format = header.format
            if item.image_format not in KEPT_FORMATS:
                item.image = self.service.recognizer.load(item.data)

    def all_failed(self, items: list[Embedded], body: dict, detail: str | None = None) -> JSONResponse | None:
        """The answer when every image failed: the first failure's status (as /v1/recognize)."""
        failed = [i.result for i in items if i.result.error is not None]
        if not items or len(failed) < len(items):
            return None
        error = failed[0].error
        reason = error.reason if isinstance(error, ImageError) else str(error)
        return JSONResponse({"detail": detail or reason, **body}, status_code=image_error_status(reason))

    def require_index(self) -> None:
        if self.index is None:
            _fail(self.metrics, 409, "no_index", NO_INDEX)

    def _search(self, vectors: np.ndarray, topk: int) -> list[list[dict]]:
        from ..indexing import _match

        with self.index_lock:
            found = self.index.search(vectors, topk)
        return [[{"id": str(row.id), **_match(score, row), "thumbnail": f"/v1/thumbnails/{row.id}"}
                 for score, row in matches] for matches in found]

    def _texts(self, texts: list[str]) -> np.ndarray:
        from ..indexing import text_queries

        with self.text_lock:
            return text_queries(self.spec, texts, self.settings.index)

    def _thumbnail(self, row_id: int, size: int) -> bytes | str:
        """JPEG bytes of row ``row_id``'s photo, or why there is none (-> 404)."""
        from ..images import load_image

        with self.index_lock:
            row = self.index.rows([row_id]).get(row_id)
        if row is None:
            return "no such row in the index"
        if not row.ok:
            return "this row of the index is a file that could not be read when it was indexed"
        try:
            # O_NOFOLLOW: the indexed real path had no link at its end; one there now is refused
            fd = os.open(row.os_path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            return "the indexed file is no longer there (run `shiwu index ... --prune`)"
        with os.fdopen(fd, "rb") as file:
            stat = os.fstat(file.fileno())
            if (stat.st_size, stat.st_mtime_ns) != (row.size, row.mtime_ns):
                return "the file changed since it was indexed: run `shiwu index` again"
            try:
                image = load_image(file, min_size=size, max_pixels=self.settings.max_pixels)
            except ImageError as exc:
                return f"the indexed file cannot be read now: {exc.reason}"
        image.thumbnail((size, size))
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=85)
        return out.getvalue()

    # -- the gallery ---------------------------------------------------------------------------

    def gallery_counts(self) -> dict[str, int]:
        gallery = self.service.recognizer.gallery if self.service.recognizer is not None else None
        return gallery.counts() if gallery is not None else {}

    def _add_examples(self, label: str, items: list[Embedded]) -> tuple[list, list]:
        """On a worker thread: store each good photo in the class folder, then swap in the grown
        gallery. (added, skipped); photos already in the class are skipped, not doubled."""
        from ..gallery import _content_hash, save_example

        rec = self.service.recognizer
        gallery = rec.gallery
        known = set(gallery.example_paths) if gallery is not None else set()
        added, skipped, vectors, paths = [], [], [], []
        for item in items:
            result = item.result
            if result.error is not None:
                skipped.append({"image": result.image, "error": result.to_dict()["error"]["message"]})
                continue
            path, created = save_example(self.gallery_folder, label, item.data, item.image_format, item.image)
            if (not created and str(path) in known) or str(path) in paths:
                skipped.append({"image": result.image, "error": f"already an example of {label}"})
                continue
            vectors.append(result.embedding)
            paths.append(str(path))
            added.append({"image": result.image, "file": path.name})
        if vectors:
            # cached by file content, as `shiwu predict --gallery` looks them up: a restart
            # (or the CLI on the same folder and settings) does not embed them again
            self.cache.put({_content_hash(Path(p)): v for p, v in zip(paths, vectors)})
            from ..gallery import extend

            rec.gallery = extend(gallery, self.gallery_folder, label, np.stack(vectors), paths)
        return added, skipped


def install(app: FastAPI) -> None:
    """Add the embedding routes to ``app`` (made by create_app, which shares read_uploads and
    check_api_key through app.state) and load the index and gallery with the model."""
    vectors = Vectors(app)
    app.state.vectors = vectors
    app.state.service.on_load.append(vectors.load)
    app.include_router(router(vectors, app.state.check_api_key))


def _has_body(request: Request) -> bool:
    length = request.headers.get("content-length")
    return bool(request.headers.get("transfer-encoding")) or (length is not None and length.strip() != "0")


def _bytes_of(upload) -> bytes:
    source = upload.source()
    return source if isinstance(source, bytes) else source.read()


def router(v: Vectors, check_api_key) -> APIRouter:
    from .app import RECOGNIZE_BODY

    settings, metrics = v.settings, v.metrics
    api = APIRouter()

    @api.post("/v1/embed", openapi_extra=RECOGNIZE_BODY, tags=["embeddings"], responses=UPLOAD_RESPONSES,
              summary="图片向量 · L2-normalised embeddings of one or more images")
    async def embed(request: Request, _auth: None = Depends(check_api_key)):
        """Images as for /v1/recognize. Answers `{"model", "dimension", "backend", "precision",
        "results": [{"image", "embedding": [D floats, unit length], "error"}]}` in upload order;
        cosine similarity of two images is the dot product of their embeddings."""
        v.require_ready()
        rec = v.service.recognizer
        items = await v.embed(request)
        if isinstance(items, Response):  # the client went away
            return items
        results = []
        for item in items:
            r = item.result
            vector = None if r.embedding is None else np.round(r.embedding.astype(np.float64), 7).tolist()
            results.append({"image": r.image, "embedding": vector, "error": r.to_dict()["error"]})
        dimension = next((len(r["embedding"]) for r in results if r["embedding"] is not None), v.dimension)
        body = {"model": rec.model_name, "dimension": dimension, "backend": rec.backend.name,
                "precision": rec.backend.precision, "results": results}
        return v.all_failed(items, body) or JSONResponse(body)

    @api.post("/v1/search", openapi_extra={**RECOGNIZE_BODY, "requestBody": {
                  **RECOGNIZE_BODY["requestBody"], "required": False}},
              tags=["embeddings"], summary="找相似 · the indexed photos closest to images or words",
              responses={**UPLOAD_RESPONSES, 400: {"description": "no query, or text asked of an index "
                                                                  "whose model has no text tower"},
                         409: {"description": "the server has no index (--index)"}})
    async def search(request: Request,
                     topk: int = Query(10, ge=1, le=settings.max_topk, description="matches per query"),
                     text: list[str] | None = Query(None, description="words to search for (repeatable); "
                                                    "needs a Chinese-CLIP index"),
                     _auth: None = Depends(check_api_key)):
        """Images in the body (as for /v1/recognize) and/or `?text=` queries. Answers
        `{"model", "index": {"rows"}, "results": [...]}`: per image `{"image", "matches", "error"}`,
        then per text `{"text", "matches", "error"}`; each match `{"id", "image", "score",
        "label", "thumbnail"}`, best first (score: cosine similarity; id: a string, as row ids
        exceed JavaScript's exact integers; thumbnail: the URL of its small JPEG)."""
        v.require_ready()
        v.require_index()
        texts = [t.strip() for t in (text or [])]
        if texts:
            if not v.text_search:
                _fail(metrics, 400, "no_text_search",
                      f"searching by words needs an index built with a Chinese-CLIP model (it has a text "
                      f"tower); this index was built with {v.spec.name}, which has none: search with a photo")
            if len(texts) > settings.max_images:
                _fail(metrics, 413, "too_many_texts", f"{len(texts)} texts; the limit is {settings.max_images}")
            bad = next((t for t in texts if not t or len(t) > MAX_TEXT_LENGTH), None)
            if bad is not None:
                _fail(metrics, 400, "bad_text", f"a search text must have 1 to {MAX_TEXT_LENGTH} characters, "
                      f"not {len(bad)}")
        if not texts and not _has_body(request):
            _fail(metrics, 400, "bad_request", "nothing to search for: upload a photo (multipart/form-data "
                  "or the raw body), or give ?text= with a Chinese-CLIP index")
        items = []
        if _has_body(request) or not texts:
            items = await v.embed(request)
            if isinstance(items, Response):
                return items
        results = []
        good = [i for i in items if i.result.error is None]
        found = iter(await asyncio.to_thread(v._search, np.stack([i.result.embedding for i in good]), topk)
                     if good else [])
        for item in items:
            error = item.result.to_dict()["error"]
            results.append({"image": item.result.image, "matches": [] if error else next(found), "error": error})
        if texts:
            try:
                vectors = await asyncio.to_thread(v._texts, texts)
            except Exception as exc:  # the text tower refused the words: say which
                _fail(metrics, 400, "bad_text", f"cannot search for these words: {exc}")
            for query, matches in zip(texts, await asyncio.to_thread(v._search, vectors, topk)):
                results.append({"text": query, "matches": matches, "error": None})
        with v.index_lock:
            rows = len(v.index)
        body = {"model": v.spec.name, "index": {"rows": rows}, "results": results}
        return (None if texts else v.all_failed(items, body)) or JSONResponse(body)

    @api.get("/v1/index", tags=["embeddings"], summary="the index /v1/search uses, if any")
    async def index_info():
        if v.index is None:  # none given, or the model (and with it the index) still loading
            return {"configured": bool(settings.index), "ready": False, "text_search": False}
        with v.index_lock:
            rows = len(v.index)
        return {"configured": True, "ready": True, "model": v.index.manifest.model,
                "dimension": v.index.manifest.dimension, "rows": rows, "text_search": v.text_search}

    @api.get("/v1/thumbnails/{row_id}", tags=["embeddings"],
             summary="a search match's thumbnail (JPEG), by its row id",
             responses={200: {"content": {"image/jpeg": {}}},
                        404: {"description": "not a row of the index, or its file is gone or changed"},
                        409: {"description": "the server has no index (--index)"}})
    async def thumbnail(row_id: str, size: int = Query(THUMBNAIL_SIZE, ge=32, le=512),
                        _auth: None = Depends(check_api_key)):
        """Only rows of the served index, named by the `id` of a search match: never a path."""
        v.require_ready()
        v.require_index()
        if not ROW_ID.fullmatch(row_id) or int(row_id) >= 2 ** 63:
            _fail(metrics, 404, "not_found", "a thumbnail is named by the id of a row of the index "
                  "(a search match's \"id\"), not by a path")
        outcome = await asyncio.to_thread(v._thumbnail, int(row_id), size)
        if isinstance(outcome, str):
            _fail(metrics, 404, "not_found", outcome)
        return Response(outcome, media_type="image/jpeg",
                        headers={"Cache-Control": "private, max-age=300", "X-Content-Type-Options": "nosniff"})

    @api.get("/v1/gallery", tags=["gallery"], summary="教它认识 · the classes taught by example photos")
    async def gallery_list():
        """`{"configured", "mode", "min_similarity", "classes": [{"label", "examples"}]}`."""
        if v.gallery_folder is None:
            return {"configured": False, "classes": []}
        rec = v.service.recognizer
        return {"configured": True, "ready": v.service.ready, "mode": settings.gallery_mode,
                "min_similarity": getattr(rec, "min_similarity", settings.min_similarity),
                "classes": [{"label": label, "examples": n} for label, n in v.gallery_counts().items()]}

    @api.post("/v1/gallery/{label:path}", openapi_extra=RECOGNIZE_BODY, tags=["gallery"],
              summary="教它认识 · add example photos of a class",
              responses={**UPLOAD_RESPONSES, 400: {"description": "not a usable class name"},
                         409: {"description": "the server has no gallery (--gallery)"}})
    async def gallery_add(label: str, request: Request, _auth: None = Depends(check_api_key)):
        """Example photos of class `label` (any language; one plain name), uploaded as for
        /v1/recognize. They are stored in the gallery folder (`DIR/label/`, named by content)
        and /v1/recognize uses them from the next request on. Unreadable photos are listed in
        `skipped` and not stored. Answers `{"label", "added": [{"image", "file"}], "skipped":
        [{"image", "error"}], "examples", "classes": [{"label", "examples"}]}`."""
        from ..gallery import GalleryError, class_folder

        if v.gallery_folder is None:
            _fail(metrics, 409, "no_gallery", NO_GALLERY)
        try:
            label = class_folder(v.gallery_folder, label).name
        except GalleryError as exc:
            _fail(metrics, 400, "bad_label", str(exc))
        v.require_ready()
        items = await v.embed(request, keep=True)
        if isinstance(items, Response):
            return items
        async with v.gallery_lock:
            added, skipped = await asyncio.to_thread(v._add_examples, label, items)
        counts = v.gallery_counts()
        body = {"label": label, "added": added, "skipped": skipped, "examples": counts.get(label, 0),
                "classes": [{"label": name, "examples": n} for name, n in counts.items()]}
        if not added:
            if any(i.result.error is None for i in items):  # only photos it already had
                return JSONResponse(body)
            return v.all_failed(items, body, "no photo could be read, nothing was added: "
                                + "; ".join(f"{s['image']}: {s['error']}" for s in skipped))
        log.info("shiwu: gallery: %d example(s) of %s added", len(added), label)
        return JSONResponse(body)

    return api
