"""The index ``shiwu serve --index`` searches: loaded with the model, searched by image
embeddings or words, and the source of thumbnails (by row id only: no route takes a path).
"""

from __future__ import annotations

import asyncio
import io
import logging
import threading

import numpy as np

from ..images import ImageError
from .duplicates import DuplicateFinder
from .thumbnails import ThumbnailThreads, read_indexed_file

log = logging.getLogger(__name__)

NO_INDEX = ("this server has no index: start it with `shiwu serve --index INDEX`, INDEX built by "
            "`shiwu index PHOTOS... --out INDEX` with the same --model")


class ServedIndex:
    """The served index (None until the model is loaded), whether it searches words, its locks."""

    def __init__(self, settings):
        self.settings = settings
        self.index = None
        self.text_search = False
        self.spec = None
        # One search or row lookup at a time: the index builds its faiss structure lazily and
        # reloads it when another process (`shiwu index`) added rows, which is not safe to race.
        self.lock = threading.Lock()
        self.text_lock = threading.Lock()  # the text tower is one torch module
        self.thumbnail_threads = ThumbnailThreads() if settings.index else None
        self.duplicates = DuplicateFinder(self)  # GET /v1/duplicates

    @property
    def configured(self) -> bool:
        return bool(self.settings.index)

    def load(self, recognizer, dimension: int) -> None:
        """On the loading thread, before /readyz says ready: open the index for this model."""
        from ..index import IndexMismatchError, open_index
        from ..indexing import preprocessing_identity

        s = self.settings
        # vectors made another way (size, preprocessing, precision) are refused at start
        index = open_index(s.index, model=recognizer.spec.key, weights_hash=recognizer.spec.fingerprint(),
                           preprocessing=preprocessing_identity(recognizer.preprocessing),
                           precision=recognizer.backend.precision)
        if index.manifest.dimension != dimension:
            index.close()
            raise IndexMismatchError(f"index {s.index} holds {index.manifest.dimension}-d vectors; "
                                     f"{recognizer.model_name} here gives {dimension}-d: build the "
                                     "index with the same --model and --size")
        self.spec = recognizer.spec
        self.index = index
        self.text_search = recognizer.spec.text_encoder is not None
        log.info("searching index %s (%d rows, %d-d%s)", s.index, len(index),
                 index.manifest.dimension, ", text search" if self.text_search else "")

    def rows(self) -> int:
        with self.lock:
            return len(self.index)

    def search(self, vectors: np.ndarray, topk: int) -> list[list[dict]]:
        """On a worker thread: per query vector, its closest rows as search matches."""
        from ..indexing import _match

        with self.lock:
            found = self.index.search(vectors, topk)
        return [[{"id": str(row.id), **_match(score, row), "thumbnail": f"/v1/thumbnails/{row.id}"}
                 for score, row in matches] for matches in found]

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        from ..indexing import text_queries

        with self.text_lock:
            return text_queries(self.spec, texts, self.settings.index)

    async def thumbnail(self, row_id: int, size: int, timeout: float) -> bytes | str | None:
        """JPEG bytes of row ``row_id``'s photo, why there is none (-> 404), or None when it
        took longer than ``timeout`` (-> 504)."""
        future = self.thumbnail_threads.submit(lambda: self._thumbnail(row_id, size))
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            return None

    def _thumbnail(self, row_id: int, size: int) -> bytes | str:
        from ..images import load_image

        with self.lock:
            row = self.index.rows([row_id]).get(row_id)
        if row is None:
            return "no such row in the index"
        if not row.ok:
            return "this row of the index is a file that could not be read when it was indexed"
        data = read_indexed_file(row.os_path, row.size, row.mtime_ns)
        if isinstance(data, str):
            return data
        try:
            image = load_image(data, min_size=size, max_pixels=self.settings.max_pixels)
        except ImageError as exc:
            return f"the indexed file cannot be read now: {exc.reason}"
        image.thumbnail((size, size))
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=85)
        return out.getvalue()

    def stuck(self, after: float) -> int:
        return self.thumbnail_threads.stuck(after) if self.thumbnail_threads else 0

    def close(self) -> None:
        if self.thumbnail_threads is not None:
            self.thumbnail_threads.close()
