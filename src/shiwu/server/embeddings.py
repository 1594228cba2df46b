"""Uploads embedded through the service: what /v1/embed, /v1/search and POST /v1/gallery share.

An embedding is the second output of the same inference as a recognition
(``MicroBatcher.submit(..., embed=True)``), so recognising, embedding and searching share
batches, the decode lanes and every admission limit of /v1/recognize.
"""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass

from fastapi import Request
from fastapi.responses import Response

from ..recognizer import Result
from .errors import count_images
from .uploads import take_uploads


@dataclass
class Embedded:
    """One upload after decode and inference."""

    result: Result                   # predictions, embedding, or the error
    data: bytes
    image_format: str | None = None  # as Pillow names it (gallery: kept as uploaded)
    image: object = None             # the decoded RGB image (gallery: formats stored as PNG)


async def embed_uploads(request: Request, service, *, topk: int = 1,
                        keep: bool = False) -> list[Embedded] | Response:
    """Each upload of ``request`` decoded and embedded (per-image errors kept), through
    /v1/recognize's admission, limits and deadline; a Response when the client went away.
    ``keep``: each good item also gets its bytes and format (the gallery stores them)."""
    async def work(uploads):
        results = await service.recognize(uploads, topk, embed=True)
        items = [Embedded(result, upload.read() if keep and result.error is None else b"")
                 for result, upload in zip(results, uploads)]
        if keep:
            await asyncio.to_thread(_describe, items, service.recognizer)
        count_images(service.metrics, [item.result for item in items])
        return items

    return await take_uploads(request, service, work)


def _describe(items: list[Embedded], recognizer) -> None:
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
            item.image = recognizer.load(item.data)
