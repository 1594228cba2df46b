"""Below the ASGI app: connections and the process, where uvicorn's defaults are too trusting.

- ``ShiwuH11Protocol``: uvicorn's h11 protocol with a *header-phase* timeout (uvicorn
  only times out a keep-alive idle after a response, and any byte, even one a second, cancels
  that timer: a connection that never finishes its request head stayed open forever), a cap on
  open connections (a new one over the cap gets a JSON 503 and is closed, so descriptors stay
  for the requests being answered), and JSON instead of plain text for an invalid request.
- ``resource_exception_handler``: the event loop's "out of file descriptors" is logged once per
  interval, not as one traceback per failed accept.
- ``DrainingServer``: uvicorn's Server that exits normally (code 0) after a clean drain instead
  of re-raising the signal (-15 / 143), and says whether the drain was clean.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import weakref

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from .middleware import json_error_bytes, once_every
from .settings import ServerSettings

log = logging.getLogger(__name__)

RESOURCE_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
MAX_HEAD_BYTES = 16 * 1024  # request line + headers (h11's default, stated): 400 above


# uvicorn's worker processes are spawned, so the protocol must be importable by name (a class
# made per call cannot be pickled); it takes its limits from the settings `shiwu serve` puts in
# the environment of every worker (ENV_SETTINGS).
PROTOCOL = "shiwu.server.protocol:ShiwuH11Protocol"


class ShiwuH11Protocol(H11Protocol):
    header_timeout: float | None = None  # read once per process from the settings
    max_connections: int = 1000
    _header_timer: asyncio.TimerHandle | None = None

    def __init__(self, *args, **kwargs):
        if ShiwuH11Protocol.header_timeout is None:
            settings = ServerSettings.from_env()
            ShiwuH11Protocol.max_connections = settings.max_connections
            ShiwuH11Protocol.header_timeout = settings.header_timeout
        super().__init__(*args, **kwargs)

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            once_every("max-connections", "%d connections open (--max-connections %d): "
                       "new ones get 503", len(self.connections) - 1, self.max_connections)
            transport.write(json_error_bytes(
                503, f"too many open connections (limit {self.max_connections}); retry later",
                [(b"retry-after", b"1")]))
            transport.close()
            return
        self._arm_header_timer()

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout, self._header_timed_out)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timed_out(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return  # a request head came in: the app's own timeouts take over
        if self.conn.trailing_data[0]:  # part of a head arrived: say why we hang up
            self.transport.write(json_error_bytes(
                408, f"the request head did not arrive within {self.header_timeout:g} s"))
        self.transport.close()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._header_timer is not None and self.conn.their_state is not h11.IDLE:
            self._cancel_header_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Back to waiting for a head (keep-alive): the whole next head must come in time, not
        # only its first byte (uvicorn's keep-alive timer stops at the first byte).
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._arm_header_timer()

    def connection_lost(self, exc) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        self._cancel_header_timer()
        detail = ("invalid HTTP request (malformed request line, header, Content-Length, "
                  f"a request head over {MAX_HEAD_BYTES // 1024} KiB, or a non-ASCII target)")
        self.transport.write(json_error_bytes(400, detail))
        self.transport.close()


class _InvalidRequestLog(logging.Filter):
    """uvicorn warns "Invalid HTTP request received." for every garbage request; keep one line
    per interval (with a count) so a scanner cannot fill the disk."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage() != "Invalid HTTP request received.":
            return True
        count = once_every.tick("invalid-http")
        if count is None:
            return False
        record.msg, record.args = record.getMessage() + once_every.suffix(count), ()
        return True


def install_log_filters() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _InvalidRequestLog) for f in logger.filters):
        logger.addFilter(_InvalidRequestLog())


def resource_exception_handler(loop: asyncio.AbstractEventLoop, context: dict) -> None:
    exc = context.get("exception")
    if isinstance(exc, OSError) and exc.errno in RESOURCE_ERRNOS:
        once_every("resources", "%s (%s): new connections wait until descriptors are free; "
                   "raise the open-file limit (ulimit -n) or lower --max-connections",
                   context.get("message", "out of resources"), exc.strerror or exc)
        return
    loop.default_exception_handler(context)


class DrainingServer(uvicorn.Server):
    """Drains on SIGTERM/SIGINT, exits normally, and knows whether every request was answered.

    uvicorn closes its listening socket the moment the signal is seen, so a load balancer's
    next /readyz probe or request is refused outright. Here the socket stays open while the
    requests in progress are answered (at most --graceful-timeout: the app gives those still
    running a 503 then): meanwhile /readyz says 503, new recognitions get 503 + Retry-After,
    and every connection is closed after its answer. Then uvicorn's own shutdown runs.
    """

    drained = True
    graceful_timeout: float = 20.0

    async def shutdown(self, sockets=None) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.graceful_timeout
        told = weakref.WeakKeyDictionary()  # connection -> the request cycle it was told about
        while loop.time() < deadline and self.server_state.tasks and not self.force_exit:
            for connection in list(self.server_state.connections):
                cycle = getattr(connection, "cycle", None)
                if cycle is not None and told.get(connection) is not cycle:
                    told[connection] = cycle
                    connection.shutdown()  # idle: closed now; busy: closed after its answer
            await asyncio.sleep(0.05)
        await super().shutdown(sockets)

    def capture_signals(self):
        # uvicorn re-raises the signal after shutting down, so the process dies *by* it
        # (-15 / 143) even after a clean drain; here the caller chooses the exit code.
        original = super().capture_signals

        import contextlib

        @contextlib.contextmanager
        def no_reraise():
            with original():
                try:
                    yield
                finally:
                    self._captured_signals.clear()
        return no_reraise()

    async def _wait_tasks_to_complete(self) -> None:
        self.drained = False  # set back only if this finishes within the graceful timeout
        await super()._wait_tasks_to_complete()
        self.drained = True
