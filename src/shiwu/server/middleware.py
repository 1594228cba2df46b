"""Pure ASGI middleware of `shiwu serve`: metrics with bounded labels, security headers and
JSON errors on every response, a CORS refusal in JSON, and a log that says a thing once.

Pure ASGI (no BaseHTTPMiddleware): no extra task per request and no copy of the body.
"""

from __future__ import annotations

import json
import logging
import threading
import time

from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse

log = logging.getLogger(__name__)

# Methods that get their own label; any other token a client invents is counted as "other", so
# random method names (each a 405) cannot grow /metrics or the process without bound.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
# Status 499 (nginx's "client closed request"): the client went away before the answer.
CLIENT_CLOSED = 499

# Every response says: do not sniff types, do not frame me, send no referrer. The page and the
# API docs get a CSP that allows what they load (all same-origin or inline: no CDN); everything
# else (JSON, metrics, errors) may load nothing at all.
# same-origin resource policy: another site's <img>/<script> cannot load an answer (a thumbnail's
# load or error told a page whether a guessed path is indexed); CORS fetches (--cors-origin) are
# not affected
BASE_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
                (b"referrer-policy", b"no-referrer"), (b"cross-origin-resource-policy", b"same-origin")]
CSP_NONE = b"default-src 'none'; frame-ancestors 'none'"
CSP_PAGE = (b"default-src 'self'; img-src 'self' blob: data:; style-src 'unsafe-inline'; "
            b"script-src 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'")
# Swagger UI (fastapi-offline): its scripts and styles from /static-offline-docs, one inline
# script that starts it, the schema fetched from /openapi.json.
CSP_DOCS = (b"default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
            b"script-src 'self' 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'")


def csp_for(path: str) -> bytes:
    if path == "/":
        return CSP_PAGE
    if path == "/docs" or path.startswith("/docs/"):
        return CSP_DOCS
    return CSP_NONE


def security_headers(path: str) -> list[tuple[bytes, bytes]]:
    return BASE_HEADERS + [(b"content-security-policy", csp_for(path))]


def json_error_bytes(status: int, detail: str, extra_headers=()) -> bytes:
    """A complete HTTP/1.1 error response, for the places below the ASGI app (the protocol)."""
    from http import HTTPStatus

    body = json.dumps({"detail": detail}, ensure_ascii=False).encode()
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}".encode(),
             b"content-type: application/json", b"content-length: " + str(len(body)).encode(),
             b"connection: close"]
    lines += [name + b": " + value for name, value in security_headers("") + list(extra_headers)]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class OnceEvery:
    """Log a recurring condition at most once per ``interval`` seconds, with how many times it
    happened since the last line: a flood of identical events (fd exhaustion, garbage
    requests) becomes one line per interval instead of one traceback each."""

    def __init__(self, interval: float = 10.0):
        self.interval = interval
        self._last: dict[str, float] = {}
        self._count: dict[str, int] = {}
        self._lock = threading.Lock()

    def tick(self, key: str) -> int | None:
        """Count one event; how many happened since the last line when a line is due, else None."""
        now = time.monotonic()
        with self._lock:
            self._count[key] = self._count.get(key, 0) + 1
            last = self._last.get(key)
            if last is not None and now - last < self.interval:
                return None
            count, self._count[key], self._last[key] = self._count[key], 0, now
        return count

    def suffix(self, count: int) -> str:
        return f" ({count} times in the last {self.interval:g} s)" if count > 1 else ""

    def __call__(self, key: str, message: str, *args, level: int = logging.WARNING,
                 exc_info=None) -> bool:
        count = self.tick(key)
        if count is None:
            return False
        log.log(level, message + self.suffix(count), *args, exc_info=exc_info)
        return True


once_every = OnceEvery()


class MetricsMiddleware:
    """Counts and times every HTTP request, with labels from fixed sets only: the app's own
    route templates (else "other"), KNOWN_METHODS (else "other"), a three-digit status."""

    def __init__(self, app, metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        method = scope["method"] if scope["method"] in KNOWN_METHODS else "other"
        started = time.perf_counter()
        status = [None]

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            code = status[0]
            if scope.get("shiwu.client_gone") and (code is None or code >= 400):
                code = CLIENT_CLOSED  # the answer (if any) went nowhere: not a server error
            elif code is None:
                code = 500
            # the template of the route the router matched ("/v1/thumbnails/{row_id}"): one of
            # the app's own, so a bounded set; no match (404) is "other"
            route = scope.get("route")
            path = getattr(route, "path", None) or "other"
            self.metrics.requests.labels(path, method, str(code) if 100 <= code < 600 else "other").inc()
            self.metrics.latency.labels(path).observe(time.perf_counter() - started)


class SecurityMiddleware:
    """Adds the security headers to every response, and turns an exception that escaped the
    app into a JSON 500 (uvicorn's own is plain text) with one log line per interval."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        extra = security_headers(scope["path"])
        started = [False]

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                started[0] = True
                names = {name.lower() for name, _ in message.get("headers", [])}
                headers = list(message.get("headers", []))
                headers += [(name, value) for name, value in extra if name not in names]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:
            if scope.get("shiwu.client_gone"):
                return
            once_every("app-error", "unexpected error on %s: %s: %s", scope["path"],
                       type(exc).__name__, exc, level=logging.ERROR, exc_info=exc)
            if not started[0]:
                response = JSONResponse({"detail": f"internal error: {type(exc).__name__}"}, 500)
                await response(scope, receive, send_wrapper)


class JSONCORSMiddleware(CORSMiddleware):
    """Starlette's CORS, with its preflight refusal ("Disallowed CORS origin", plain text) given
    as the JSON every other error is."""

    def preflight_response(self, request_headers):
        response = super().preflight_response(request_headers)
        if response.status_code >= 400:
            detail = response.body.decode("utf-8", "replace")
            headers = {k: v for k, v in response.headers.items()
                       if k.lower() not in ("content-length", "content-type")}
            return JSONResponse({"detail": detail}, status_code=response.status_code, headers=headers)
        return response
