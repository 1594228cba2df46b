"""`shiwu serve`: an HTTP service with micro-batching and a web page.

Needs the ``serve`` extra (``pip install "shiwu[serve]"``). ``run`` starts uvicorn the way the
command line does; uvicorn builds the ASGI app in each worker with ``app.app_from_env``.

Layout: ``app`` builds the app (middleware, routers, lifespan); ``service`` holds the model,
the batcher, the decode lanes and the drain state; ``uploads`` admits request bodies;
``deps`` the route dependencies; ``routes/`` one module per resource; ``schemas`` the answers
as documented on /docs; ``access`` the Host and Origin checks; ``served_index`` and
``served_gallery`` what the embedding routes serve; ``protocol`` the connection layer below.
"""

from __future__ import annotations

import importlib.util
import logging
import os

from .settings import ENV_SETTINGS, ServerSettings

__all__ = ["ServerSettings", "run", "MissingExtra", "configure_logging"]

log = logging.getLogger(__name__)


class MissingExtra(RuntimeError):
    """The web framework is not installed."""


def configure_logging(level: str = "info") -> None:
    """shiwu's records on stderr as ``shiwu: message`` (as the command line writes them), at
    uvicorn's --log-level or above; in the serving process and in each worker process."""
    from ..logs import NORMAL, QUIET, VERBOSE, configure

    configure({"debug": VERBOSE, "info": NORMAL}.get(level, QUIET))
    if level == "error":
        logging.getLogger("shiwu").setLevel(logging.ERROR)


# uvicorn gets this much longer than --graceful-timeout before it cuts connections: the app
# answers every request in progress (or gives it a 503) by --graceful-timeout, and the last
# answers need a moment to be written.
DRAIN_MARGIN_S = 1.5


def run(settings: ServerSettings, *, host: str = "127.0.0.1", port: int = 8000, workers: int = 1,
        log_level: str = "info", access_log: bool = True) -> bool:
    """Serve until SIGTERM/SIGINT; True when the drain was clean (every request answered)."""
    try:
        import fastapi  # noqa: F401
        import prometheus_client  # noqa: F401
        import uvicorn
    except ImportError as exc:
        raise MissingExtra(f"`shiwu serve` needs {exc.name}: pip install \"shiwu[serve]\"") from None
    if not (importlib.util.find_spec("python_multipart") or importlib.util.find_spec("multipart")):
        raise MissingExtra("`shiwu serve` needs python-multipart: pip install \"shiwu[serve]\"")
    from .access import is_loopback
    from .protocol import MAX_HEAD_BYTES, PROTOCOL, DrainingServer

    configure_logging(log_level)
    settings.log_level = log_level
    if not is_loopback(host):
        what = "an API key is required on every POST, on thumbnails and on /v1/duplicates" if settings.api_key else \
            "anyone who can reach it can use it (consider --api-key)"
        log.warning("listening on %s, not only on this machine: %s", host, what)
        if "*" in settings.allowed_hosts:
            log.warning("any Host name is accepted: name the ones clients use with --allowed-hosts "
                        "(a DNS-rebinding page could otherwise reach it from a browser)")
    if "*" in settings.cors_origins:
        log.warning("--cors-origin '*': any web site's page may call this server; only the API key "
                    "stands between them and it")
    # Workers are separate processes: hand them the settings through the environment.
    os.environ[ENV_SETTINGS] = settings.to_env()
    options = dict(factory=True, host=host, port=port, workers=workers, log_level=log_level,
                   access_log=access_log, http=PROTOCOL,
                   timeout_keep_alive=settings.keep_alive_timeout,
                   timeout_graceful_shutdown=settings.graceful_timeout + DRAIN_MARGIN_S,
                   h11_max_incomplete_event_size=MAX_HEAD_BYTES)
    if workers > 1:  # uvicorn's supervisor: each worker drains the same way
        uvicorn.run("shiwu.server.app:app_from_env", **options)
        return True
    config = uvicorn.Config("shiwu.server.app:app_from_env", **options)
    server = DrainingServer(config)
    server.graceful_timeout = settings.graceful_timeout
    server.run()
    if not server.started:
        raise SystemExit(3)  # uvicorn's start-up failure (port in use, ...), already logged
    return server.drained
