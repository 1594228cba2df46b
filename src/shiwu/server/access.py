"""Who may call the server from a browser: the Host and Origin checks of every request.

A server on 127.0.0.1 is still reachable from any web page the user opens: the page cannot read
the answers of a cross-site request, but it can *send* one (a form POST stores photos in the
gallery), and a DNS-rebinding page (evil.example resolving to 127.0.0.1) talks to it as its own
origin and reads everything. So, before any route runs:

- **Host**: the request must name the server as one of ``--allowed-hosts`` (by default, when
  bound to a loopback address, only ``localhost``, ``127.0.0.1`` and ``::1``; ``*`` allows any,
  the default when bound to another address). A rebinding page sends its own name: 400.
  ``/healthz`` and ``/readyz`` answer any Host (probes use addresses; they reveal nothing).
- **Origin** on state-changing methods (POST, PUT, PATCH, DELETE): a browser says which page
  sent the request; it must be this server itself (the web page at ``/``) or one of
  ``--cors-origin``. Anything else, ``Origin: null`` included, is refused with 403, key or no
  key. Clients that are not browsers (curl, scripts) send no Origin and are not affected; a
  request without Origin whose ``Sec-Fetch-Site`` says ``cross-site`` is refused too.
- The same check on **every ``/v1/`` request**, reads included: a page cannot read a
  cross-site answer, but an ``<img src=/v1/thumbnails/ID>`` told it whether a guessed path is
  indexed (row ids are a hash of the path), and ``/v1/duplicates`` reads every indexed file.
  Every answer also carries ``Cross-Origin-Resource-Policy: same-origin`` (middleware.py).
  The page at ``/`` stays reachable from a link on another site.

Pure ASGI, like the rest of the middleware; refusals are JSON ``{"detail"}`` as everywhere.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from starlette.responses import JSONResponse

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Liveness and readiness answer whatever the Host: load balancers and orchestrators probe by
# address, and the answers say nothing a page could use.
PROBES = frozenset({"/healthz", "/readyz"})
DEFAULT_PORTS = {"http": 80, "https": 443}


def is_loopback(host: str) -> bool:
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def split_host(value: str) -> tuple[str, int | None] | None:
    """A Host header (``name``, ``name:port``, ``[v6]:port``) as (lower-case name, port), or
    None when it is not one."""
    try:
        parts = urlsplit("//" + value.strip())
        name, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not name or parts.username is not None or parts.password is not None or parts.path:
        return None
    return name.lower().rstrip("."), port


def host_allowed(name: str, allowed: tuple[str, ...]) -> bool:
    for pattern in allowed:
        pattern = pattern.lower().strip("[]").rstrip(".")
        if pattern == "*" or pattern == name:
            return True
        if pattern.startswith("*.") and name.endswith(pattern[1:]):
            return True
    return False


def _origin_key(origin: str) -> tuple[str, int | None] | None:
    try:
        parts = urlsplit(origin)
        port = parts.port or DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        return None
    if not parts.hostname:
        return None
    return parts.hostname.lower().rstrip("."), port


class AccessMiddleware:
    def __init__(self, app, settings, metrics):
        self.app = app
        self.metrics = metrics
        self.allowed_hosts = tuple(settings.allowed_hosts)
        self.origins = {_origin_key(o) for o in settings.cors_origins} - {None}
        self.any_origin = "*" in settings.cors_origins  # --cors-origin '*': every site, knowingly
        hint = ", ".join(self.allowed_hosts) or "none"
        self.host_hint = (f"this server answers only to the host names {hint} (a DNS-rebinding "
                          "page sends its own): start it with --allowed-hosts NAME to add one")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers: dict[bytes, bytes] = {}
        for name, value in scope.get("headers", []):
            headers.setdefault(name.lower(), value)
        raw_host = headers.get(b"host", b"").decode("latin-1")
        host = split_host(raw_host) if raw_host else None
        if scope["path"] not in PROBES and "*" not in self.allowed_hosts and (host is None or not host_allowed(host[0], self.allowed_hosts)):
            return await self._refuse(scope, receive, send, 400, "bad_host",
                                      f"Host {raw_host[:100]!r} refused: {self.host_hint}")
        changes = scope["method"] in STATE_CHANGING
        # a CORS preflight (OPTIONS) carries nothing and is answered by the CORS middleware
        if changes or (scope["path"].startswith("/v1/") and scope["method"] != "OPTIONS"):
            why = self._cross_site(headers, host, changes)
            if why:
                return await self._refuse(scope, receive, send, 403, "cross_site", why)
        return await self.app(scope, receive, send)

    def _cross_site(self, headers, host, changes: bool) -> str | None:
        origin = headers.get(b"origin")
        if origin is None:
            if headers.get(b"sec-fetch-site", b"").lower() == b"cross-site":
                return "a cross-site request from a browser: refused (allow a site with --cors-origin)"
            return None
        origin = origin.decode("latin-1")
        key = _origin_key(origin)
        if self.any_origin or (key is not None and key in self.origins):
            return None
        if key is not None and host is not None:
            # a Host without a port came to a default port, whichever scheme a proxy in front
            # spoke: the name alone decides
            if key[0] == host[0] and (host[1] is None or key[1] == host[1]):
                return None
        what = "requests that change something are" if changes else "this server's answers are"
        return (f"{what} refused from another site's page (Origin {origin[:100]!r}); allow it with "
                "--cors-origin ORIGIN")

    async def _refuse(self, scope, receive, send, status: int, kind: str, detail: str):
        self.metrics.errors.labels(kind).inc()
        await JSONResponse({"detail": detail}, status_code=status)(scope, receive, send)
