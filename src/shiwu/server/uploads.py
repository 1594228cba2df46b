"""Admission of uploads: what a request may send, read and hold before its images are decoded.

One upload route (``/v1/recognize``, ``/v1/embed``, ``/v1/search``, ``POST /v1/gallery/…``)
goes through ``take_uploads``: refused while draining or loading (503), by content type (415)
and declared size (413), then a reservation of request-body bytes *before* a byte is read
(``Budget``: 503 + Retry-After when it does not fit — refusing early costs nothing, queueing
into a 504 costs the client 30 s and us the memory), then the body streamed into spooled
temporary files (memory per upload ~1 MiB whatever its size) under the request deadline (408
while reading, 504 while answering, 503 when a drain cuts it).

Starlette's multipart parser is used as a library. Two of its private attributes name the
files it spooled before it failed; they are read only here, through ``_spooled_so_far``, and
``tests/test_server_uploads.py`` fails when a Starlette release renames them.
"""

from __future__ import annotations

import errno
import logging
import os
from tempfile import SpooledTemporaryFile

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from .batcher import QueueFull
from .errors import BUSY_HEADERS, NO_URL_FETCHING, fail
from .middleware import CLIENT_CLOSED, once_every

log = logging.getLogger(__name__)

RAW_TYPES = ("image/", "application/octet-stream")
# Upload bodies are written to temporary files once one passes this size (Starlette's own
# multipart spool size): memory per upload being read stays ~1 MiB whatever its size.
SPOOL_BYTES = 1024 * 1024
# Starlette MultiPartParser attributes holding what it spooled (see the module docstring).
PARSER_FILE_ATTRIBUTES = ("_files_to_close_on_error", "items")


class Budget:
    """A non-blocking reservation counter of bytes (request bodies being read) or pixels (big
    images admitted), used on the event loop only: no lock needed."""

    def __init__(self, limit: int):
        self.limit = int(limit)
        self.used = 0

    def try_take(self, amount: int) -> int | None:
        """Reserve ``amount`` (clamped to the whole budget, so one request that fits the
        limits always gets in when alone); the amount taken, or None when it does not fit."""
        amount = min(int(amount), self.limit)
        if self.used + amount > self.limit:
            return None
        self.used += amount
        return amount

    def give_back(self, amount: int) -> None:
        self.used = max(0, self.used - amount)


class Upload:
    """One image of a request: its name, its bytes in a spooled file, and their count."""

    __slots__ = ("name", "file", "size")

    def __init__(self, name: str, file, size: int):
        self.name, self.file, self.size = name, file, size

    def source(self):
        if self.size == 0:
            return b""  # load_image says "empty input (0 bytes)" for this
        self.file.seek(0)
        return self.file

    def read(self) -> bytes:
        source = self.source()
        return source if isinstance(source, bytes) else source.read()


def _spooled_so_far(parser: MultiPartParser) -> list:
    """The files ``parser`` spooled before it stopped (to be closed). Private attributes of
    Starlette, read defensively: missing ones give nothing, never an AttributeError."""
    files = list(getattr(parser, "_files_to_close_on_error", []) or [])
    for item in getattr(parser, "items", []) or []:
        value = item[1] if isinstance(item, tuple) and len(item) == 2 else None
        if value is not None and not isinstance(value, str) and hasattr(value, "file"):
            files.append(value.file)
    return files


async def _limited(request: Request, metrics, limit: int):
    """The body's chunks, 413 once they add up to more than ``limit`` bytes."""
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            fail(metrics, 413, "too_large", f"request body is over the limit of {limit:,} bytes")
        yield chunk


async def read_uploads(request: Request, content_type: str, opened: list, settings, metrics) -> list[Upload]:
    """The images of the request, each spooled to a temporary file past SPOOL_BYTES as it
    streams in (the body is never held in memory whole). Files go to ``opened``."""
    body = _limited(request, metrics, settings.max_upload_bytes)
    if not content_type.startswith("multipart/form-data"):
        upload = UploadFile(SpooledTemporaryFile(max_size=SPOOL_BYTES), size=0)
        opened.append(upload.file)
        async for chunk in body:
            await upload.write(chunk)  # to disk off the event loop once rolled over
        if not upload.size:
            fail(metrics, 400, "bad_request", "empty request body: no image")
        return [Upload(f"<{upload.size} bytes>", upload.file, upload.size)]

    parser = MultiPartParser(request.headers, body, max_files=settings.max_images, max_fields=100)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        opened.extend(_spooled_so_far(parser))
        if exc.message.startswith("Too many files"):
            fail(metrics, 413, "too_many_images", f"more than {settings.max_images} images in "
                 f"one request; the limit is {settings.max_images}")
        fail(metrics, 400, "bad_request", f"malformed multipart body: {exc.message}")
    except BaseException:  # 413, client gone, timeout: close what was spooled so far
        opened.extend(_spooled_so_far(parser))
        raise
    files = [value for _, value in form.multi_items() if not isinstance(value, str)]
    opened.extend(f.file for f in files)
    if not files:
        fail(metrics, 400, "bad_request", "no file in the multipart body. " + NO_URL_FETCHING)
    fields = sorted({name for name, value in form.multi_items() if isinstance(value, str)})
    if fields:  # a form field topk=3 was ignored in silence: the answer was not the one asked for
        fail(metrics, 400, "bad_request", f"form field{'s' if len(fields) > 1 else ''} "
             f"{', '.join(repr(f[:40]) for f in fields[:5])} not read: the multipart body holds "
             "only images; options are query parameters (?topk=3)")
    uploads = []
    for index, upload in enumerate(files):
        size = upload.size or 0
        name = os.path.basename((upload.filename or "").replace("\\", "/"))[:200]
        uploads.append(Upload(name or f"<upload {index + 1}: {size} bytes>", upload.file, size))
    return uploads


def _admit(request: Request, service) -> tuple[str, int]:
    """The checks made before a byte of the body is read: (content type, bytes reserved)."""
    settings, metrics = service.settings, service.metrics
    if service.draining:
        fail(metrics, 503, "shutting_down", "the server is shutting down; retry on another "
             "instance", headers=BUSY_HEADERS)
    if not service.ready:
        fail(metrics, 503, "not_ready", service.error or "the model is still loading",
             headers={"Retry-After": "2"})
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):  # images are compressed already; a gzip body read as
        # an image was "not a recognised image format", which named the wrong thing
        fail(metrics, 415, "unsupported_media", f"Content-Encoding {encoding[:30]!r} is not read: send the "
             "image bytes as they are (image formats are compressed already)")
    content_type = request.headers.get("content-type", "").strip().lower()
    if content_type and not content_type.startswith(("multipart/form-data",) + RAW_TYPES):
        fail(metrics, 415, "unsupported_media", f"unsupported content type {content_type!r}. "
             + NO_URL_FETCHING)
    limit = settings.max_upload_bytes
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        fail(metrics, 413, "too_large", f"request body is {int(length):,} bytes; the limit is {limit:,}")
    # a body of unknown length may be as large as the upload limit, so it reserves that much
    wanted = int(length) if length and length.isdigit() else limit
    reserved = service.body_bytes.try_take(wanted)
    if reserved is None:
        fail(metrics, 503, "overloaded", f"server busy: {service.body_bytes.used:,} bytes of uploads "
             f"in progress (limit {service.body_bytes.limit:,})", headers=BUSY_HEADERS)
    return content_type, reserved


async def take_uploads(request: Request, service, work):
    """``await work(uploads)`` for the images of ``request``, with every limit of an upload
    route: draining and readiness, content type and size (415, 413), the byte budget before
    the body is read (503), the request deadline (408 reading, 504 answering, 503 when a
    drain cuts it), a client gone (499), queue and pixel budgets (503), failed inference
    (500). The spooled files are open while ``work`` runs and closed after it."""
    settings, metrics = service.settings, service.metrics
    content_type, reserved = _admit(request, service)
    opened: list = []
    phase = "body"
    try:
        async with service.deadline(settings.request_timeout):
            uploads = await read_uploads(request, content_type, opened, settings, metrics)
            phase = "answer"
            return await work(uploads)
    except TimeoutError:
        if service.draining:
            fail(metrics, 503, "shutting_down", "the server is shutting down and could not "
                 f"answer within --graceful-timeout ({settings.graceful_timeout:g} s); retry",
                 headers=BUSY_HEADERS)
        if phase == "body":
            fail(metrics, 408, "timeout", f"the request body did not arrive within "
                 f"{settings.request_timeout:g} s", headers={"Connection": "close"})
        fail(metrics, 504, "timeout", f"no answer within {settings.request_timeout:g} s")
    except ClientDisconnect:
        request.scope["shiwu.client_gone"] = True
        metrics.disconnects.inc()
        once_every("client-gone", "a client went away while sending its body "
                   "(counted in shiwu_client_disconnects_total)", level=logging.INFO)
        return Response(status_code=CLIENT_CLOSED)
    except QueueFull as exc:
        fail(metrics, 503, "overloaded", f"server busy: {exc}", headers={"Retry-After": "1"})
    except OSError as exc:
        if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOSPC):
            once_every("upload-resources", "cannot spool an upload: %s", exc)
            fail(metrics, 503, "overloaded", f"server out of resources ({exc.strerror}); retry later",
                 headers=BUSY_HEADERS)
        raise
    except HTTPException:
        raise
    except Exception as exc:
        log.exception("inference failed")
        fail(metrics, 500, "inference", f"inference failed: {type(exc).__name__}: {exc}")
    finally:
        service.body_bytes.give_back(reserved)
        for file in opened:
            file.close()
