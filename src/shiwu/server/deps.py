"""The dependencies routes declare (FastAPI ``Depends``, used through ``Annotated``): the
running service, the API key check, the ``topk`` of /v1/recognize.

Each reads what it needs from ``request.app.state`` (filled by ``app.create_app``), so the
routes never import the module that builds the app.
"""

from __future__ import annotations

import hmac
import re
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader

from .errors import fail
from .service import Service

# The query parameters /v1/recognize accepts; anything else is refused by name (a typo such as
# `top_k=3` would otherwise silently give the default).
QUERY_PARAMETERS = ("topk",)
DEFAULT_TOPK = 5
ACCEPTED_QUERY = ("The only query parameter is `topk`; any other, or `topk` given twice, is "
                  "refused with 400 naming the accepted ones.")

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False,
                              description="needed when the server runs with --api-key; "
                                          "`Authorization: Bearer KEY` works too")


def get_service(request: Request) -> Service:
    return request.app.state.service


ServiceDep = Annotated[Service, Depends(get_service)]


def require_api_key(service: ServiceDep, request: Request,
                    key: Annotated[str | None, Depends(api_key_header)] = None) -> None:
    """401 unless the server runs without --api-key or the request carries the key
    (``X-API-Key`` or ``Authorization: Bearer``)."""
    expected = service.settings.api_key
    if not expected:
        return
    if not key:
        auth = request.headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            key = auth[7:].strip()
    # HTTP header values are bytes; Starlette hands them over decoded as latin-1, so encoding
    # back to latin-1 gives the bytes the client sent. The key is compared as UTF-8 bytes:
    # `--api-key 密钥` matches a client that sends 密钥 in UTF-8 (curl, httpx, requests do).
    given = key.encode("latin-1", "replace") if key else b""
    if not given or not hmac.compare_digest(given, expected.encode("utf-8")):
        fail(service.metrics, 401, "unauthorized", "missing or wrong API key (X-API-Key header or "
             "Authorization: Bearer)", headers={"WWW-Authenticate": "Bearer"})


ApiKeyDep = Annotated[None, Depends(require_api_key)]


def recognize_topk(service: ServiceDep, request: Request) -> int:
    """/v1/recognize's ``topk``, read by hand: an unknown or repeated query parameter is a 400
    naming the accepted ones, a bad value a 422 (FastAPI's Query would ignore the unknown)."""
    metrics, limit = service.metrics, service.settings.max_topk
    items = request.query_params.multi_items()
    names = [name for name, _ in items]
    unknown = sorted(set(names) - set(QUERY_PARAMETERS))
    if unknown:
        fail(metrics, 400, "bad_request", f"unknown query parameter{'s' if len(unknown) > 1 else ''} "
             f"{', '.join(map(repr, unknown))}; accepted: {', '.join(QUERY_PARAMETERS)}")
    if names.count("topk") > 1:
        fail(metrics, 400, "bad_request", f"topk given {names.count('topk')} times; give it once")
    raw = dict(items).get("topk")
    if raw is None:
        return DEFAULT_TOPK
    if not re.fullmatch(r"[0-9]{1,6}", raw) or not 1 <= int(raw) <= limit:
        fail(metrics, 422, "bad_request", f"topk must be a whole number from 1 to {limit}, got {raw[:20]!r}")
    return int(raw)


RecognizeTopK = Annotated[int, Depends(recognize_topk)]


def _query_names(dependant) -> set[str]:
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


def only_declared_query_parameters(service: ServiceDep, request: Request) -> None:
    """A router dependency: a query parameter the route does not declare is a 400 naming the
    ones it takes (FastAPI ignores it: ?top_k=2 gave 10 matches in silence)."""
    route = request.scope.get("route")
    known = _query_names(route.dependant) if route is not None else set()
    unknown = sorted({name for name, _ in request.query_params.multi_items()} - known)
    if unknown:
        accepted = ", ".join(sorted(known)) or "none"
        fail(service.metrics, 400, "bad_request", f"unknown query parameter{'s' if len(unknown) > 1 else ''} "
             f"{', '.join(repr(name[:40]) for name in unknown[:5])}; accepted: {accepted}")


DeclaredQuery = Depends(only_declared_query_parameters)
