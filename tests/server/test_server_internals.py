"""The two places `shiwu serve` leans on what others do not promise: Starlette's multipart
parser's private attributes (uploads.py closes the files it spooled before failing), and
threads that may hang in the kernel (/healthz must say so)."""

import asyncio
import threading

from starlette.datastructures import Headers
from starlette.formparsers import MultiPartParser

from shiwu.server import uploads
from shiwu.server.service import Service
from shiwu.server.metrics import Metrics
from shiwu.server.settings import ServerSettings
from shiwu.server.thumbnails import ThumbnailThreads


def test_starlette_still_has_the_attributes_uploads_reads():
    async def body():
        yield b""

    parser = MultiPartParser(Headers({"content-type": "multipart/form-data; boundary=x"}), body())
    for name in uploads.PARSER_FILE_ATTRIBUTES:
        assert hasattr(parser, name), f"Starlette renamed MultiPartParser.{name}: update uploads.py"


def test_files_spooled_before_a_failure_are_found_and_closed():
    boundary = b"b0undary"
    part = (b"--" + boundary + b"\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.jpg\"\r\n"
            b"Content-Type: image/jpeg\r\n\r\n" + b"\xff" * 5000 + b"\r\n")

    async def body():
        yield part
        yield part[:40]  # cut in the middle of the second part's head
        raise ConnectionResetError("client gone")

    async def parse():
        parser = MultiPartParser(Headers({"content-type": f"multipart/form-data; boundary={boundary.decode()}"}),
                                 body())
        try:
            await parser.parse()
        except ConnectionResetError:
            return uploads._spooled_so_far(parser)
        raise AssertionError("the parser did not fail")

    spooled = asyncio.run(parse())
    assert spooled, "the first file spooled was not found"
    for file in spooled:
        file.close()


def test_healthz_reports_threads_stuck_in_the_kernel(monkeypatch):
    monkeypatch.setattr("shiwu.server.service.STUCK_FLOOR_S", 0.2)
    service = Service(ServerSettings(index="unused", request_timeout=0.2), Metrics())
    service.index.thumbnail_threads.close()
    threads = service.index.thumbnail_threads = ThumbnailThreads(2)
    release = threading.Event()

    async def hang_both():
        futures = [threads.submit(release.wait) for _ in range(2)]
        await asyncio.sleep(0.5)
        stuck = service.stuck_work()
        release.set()
        await asyncio.gather(*futures)
        return stuck

    stuck = asyncio.run(hang_both())
    assert stuck and "thumbnail" in stuck
    assert service.stuck_work() is None
    threads.close()
