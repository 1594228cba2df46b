"""``shiwu serve``: the HTTP service with micro-batching and the web page."""

from __future__ import annotations

import os
import sys

from .options import (EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, add_gallery_options, add_model_options,
                      model_ref, number, positive_int)

EXIT_NOT_STARTED = 3  # the server could not start (port in use); server.run's SystemExit(3) likewise


def add(commands) -> None:
    from ..server.settings import ENV_API_KEY, MB, ServerSettings

    d = ServerSettings()
    serve = commands.add_parser(
        "serve", help="HTTP service with micro-batching and a web page (pip install \"shiwu[serve]\")",
        description="POST /v1/recognize /v1/embed /v1/search /v1/gallery/LABEL, GET /v1/models /v1/index "
                    "/v1/gallery /healthz /readyz /metrics /docs, web page at /.")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=_port, default=8000, help="TCP port, 1-65535 (default 8000)")
    serve.add_argument("--workers", type=positive_int, default=1,
                       help="processes, each with its own model and batcher (default 1)")
    serve.add_argument("--max-batch-size", type=lambda t: None if t == "auto" else positive_int(t),
                       default=None, metavar="N|auto",
                       help="most images in one inference batch (default auto: the size with the "
                            "lowest model time per image here, 1 unless batches are >=10%% cheaper)")
    serve.add_argument("--max-wait-ms", type=number(0, True), default=d.max_wait_ms,
                       help=f"longest wait for a batch to fill, in ms (default {d.max_wait_ms:g})")
    serve.add_argument("--max-queue", type=positive_int, default=d.max_queue,
                       help=f"images in progress (decoding, queued, in a batch) before requests "
                            f"get 503 (default {d.max_queue})")
    serve.add_argument("--max-upload-mb", type=number(0, False), default=d.max_upload_bytes / MB,
                       help=f"largest request body in MiB (default {d.max_upload_bytes / MB:g})")
    serve.add_argument("--max-images", type=positive_int, default=d.max_images,
                       help=f"most images in one request (default {d.max_images})")
    serve.add_argument("--max-pixels", type=positive_int, default=d.max_pixels,
                       help=f"most pixels in one image (default {d.max_pixels:,})")
    serve.add_argument("--timeout", type=number(0, False), default=d.request_timeout,
                       help=f"request timeout in seconds (default {d.request_timeout:g})")
    serve.add_argument("--decode-threads", type=positive_int, default=d.decode_threads,
                       help=f"threads decoding and preprocessing uploads, half of them (at least one) "
                            f"for big images, the others only for small ones (default "
                            f"{d.decode_threads}, at least 2)")
    serve.add_argument("--max-inflight-mb", type=number(0, False), default=d.max_inflight_bytes / MB,
                       help=f"request bodies being read or held, in MiB, reserved from Content-Length "
                            f"(or --max-upload-mb) before reading: 503 above "
                            f"(default {d.max_inflight_bytes / MB:g})")
    serve.add_argument("--max-decode-megapixels", type=number(0, False),
                       default=d.max_decode_pixels / 1e6,
                       help=f"pixels of big images admitted and not yet decoded, in millions: "
                            f"503 above (default {d.max_decode_pixels / 1e6:g})")
    serve.add_argument("--max-connections", type=positive_int, default=d.max_connections,
                       help=f"open connections; a new one beyond gets 503 (default {d.max_connections})")
    serve.add_argument("--header-timeout", type=number(0, False), default=d.header_timeout,
                       help=f"seconds for a connection to send a complete request head "
                            f"(default {d.header_timeout:g})")
    serve.add_argument("--keep-alive-timeout", type=number(0, False), default=d.keep_alive_timeout,
                       help=f"seconds an idle keep-alive connection stays open "
                            f"(default {d.keep_alive_timeout:g})")
    serve.add_argument("--graceful-timeout", type=number(0, False), default=d.graceful_timeout,
                       help=f"on SIGTERM/SIGINT: seconds to answer the requests in progress (those "
                            f"not done get 503) before exiting; exit code 0 after a clean drain "
                            f"(default {d.graceful_timeout:g})")
    serve.add_argument("--warmup-seconds", type=number(0, True), default=d.warmup_seconds,
                       help="time allowed for running every batch size once before /readyz says "
                            f"ready (default {d.warmup_seconds:g}; 0: no warm-up)")
    serve.add_argument("--api-key", default=None,
                       help=f"require this key on every POST, on thumbnails and on /v1/duplicates (or set {ENV_API_KEY})")
    serve.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                       help="allow browser calls from this origin, e.g. https://app.example (repeatable; "
                            "CORS is off by default, and a POST from any other site's page is refused)")
    serve.add_argument("--allowed-hosts", default=None, metavar="NAMES",
                       help="comma-separated host names clients reach the server by (the Host header; "
                            "'*.example.com' wildcards, '*' any); others get 400, which stops "
                            "DNS-rebinding pages (default: localhost,127.0.0.1,::1 when --host is a "
                            "loopback address, else any)")
    serve.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    serve.add_argument("--no-access-log", action="store_true", help="do not log every request")
    serve.add_argument("--index", metavar="INDEX", default=None,
                       help="an index (folder or Milvus store) built by `shiwu index` with the same "
                            "--model: POST /v1/search and the web page's 找相似 search it")
    add_model_options(serve)
    add_gallery_options(serve)
    serve.set_defaults(run=run)


def run(args) -> int:
    from ..cpu import default_threads
    from ..models.registry import get_model
    from ..server import MissingExtra, ServerSettings, run as run_server
    from ..server.settings import ENV_API_KEY, MB

    model = model_ref(args)
    spec = get_model(model)
    spec.weights_path()  # unknown model or missing weights: say so now, exit 2
    problem = _check_vectors(args, spec) or _check_hosts(args)
    if problem:
        print(f"shiwu: error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    problem = _check_port(args.host, args.port)
    if problem:  # before seconds of loading and timing the model, not after
        print(f"shiwu: error: {problem}", file=sys.stderr)
        return EXIT_NOT_STARTED
    threads = args.threads
    if threads is None and args.workers > 1:  # the workers share the cores
        threads = max(1, default_threads() // args.workers)
    try:
        settings = ServerSettings(
            model=model, backend=args.backend, precision=args.precision, threads=threads,
            size=args.size, max_batch_size=args.max_batch_size, max_wait_ms=args.max_wait_ms,
            max_queue=args.max_queue, max_upload_bytes=int(args.max_upload_mb * MB),
            max_images=args.max_images, max_pixels=args.max_pixels, request_timeout=args.timeout,
            calibration=args.calibration, warmup_seconds=args.warmup_seconds,
            decode_threads=args.decode_threads, max_inflight_bytes=int(args.max_inflight_mb * MB),
            max_decode_pixels=int(args.max_decode_megapixels * 1e6),
            max_connections=args.max_connections, header_timeout=args.header_timeout,
            keep_alive_timeout=args.keep_alive_timeout, graceful_timeout=args.graceful_timeout,
            api_key=args.api_key or os.environ.get(ENV_API_KEY) or None,
            cors_origins=tuple(args.cors_origin), allowed_hosts=allowed_hosts(args), index=args.index,
            gallery=os.path.abspath(args.gallery) if args.gallery else None,
            gallery_mode=args.gallery_mode, min_similarity=args.min_similarity)
    except ValueError as exc:  # e.g. an API key that is not text
        print(f"shiwu: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        drained = run_server(settings, host=args.host, port=args.port, workers=args.workers,
                             log_level=args.log_level, access_log=not args.no_access_log)
    except MissingExtra as exc:
        print(f"shiwu: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    # The interpreter's last garbage collection walks every object of the model and the
    # runtimes: 4 s here after a drain that took 0.1 s. Nothing in them needs finalising, so
    # leave them out of it (gc.freeze: the final collection skips frozen objects).
    import gc

    gc.freeze()
    # After SIGTERM: 0 when every request was answered; 1 when some had to be cut.
    return EXIT_OK if drained else EXIT_SOME_FAILED


def _port(text: str) -> int:
    import argparse

    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (a whole number from 1 to 65535)")
    return port


def allowed_hosts(args) -> tuple[str, ...]:
    """--allowed-hosts, or its default: the loopback names (and the address itself) when
    listening on a loopback address, any host otherwise."""
    from ..server.access import LOOPBACK_NAMES, is_loopback

    if args.allowed_hosts:
        return tuple(h.strip() for h in args.allowed_hosts.split(",") if h.strip())
    if is_loopback(args.host):
        return tuple(dict.fromkeys(LOOPBACK_NAMES + (args.host.strip("[]").lower(),)))
    return ("*",)


def _check_port(host: str, port: int) -> str | None:
    """Why the server could not listen on host:port (None: it can), tried as uvicorn binds:
    SO_REUSEADDR, so a port that only has connections closing (TIME_WAIT) counts as free."""
    import errno
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host.strip("[]"), port))
        except OSError as exc:
            hint = ": another program listens there; choose another --port" if exc.errno == errno.EADDRINUSE else ""
            return f"cannot listen on {host}:{port}: {exc.strerror or exc}{hint}"
    return None


def _check_hosts(args) -> str | None:
    from ..server.settings import ENV_API_KEY

    if args.allowed_hosts is not None and not allowed_hosts(args):
        return "--allowed-hosts needs at least one host name (or '*': any)"
    if "*" in args.cors_origin and not (args.api_key or os.environ.get(ENV_API_KEY)):
        # '*' lets every web site's page call it and read the answers: only behind a key
        return ("--cors-origin '*' lets every web site's page use this server and read its answers: "
                "give --api-key too, or name the sites (--cors-origin https://app.example)")
    return None


def _check_vectors(args, spec) -> str | None:
    """Why --index or --gallery cannot be served with this model, before it loads (None: fine);
    with --index, the runtime and precision become the index's. The server checks again once
    loaded (dimension, readable photos) and /readyz says why."""
    from ..gallery import GalleryError, class_folders
    from ..index import IndexFormatError, open_index

    if args.index:
        from ..indexing import follow_index

        try:  # another model's or weights' index, not an index, a newer format: refused here
            index = open_index(args.index, model=spec.key, weights_hash=spec.fingerprint())
            try:  # the served model makes its vectors as the index's were (index.made_with)
                made = follow_index(index.manifest, args.index, backend=args.backend, precision=args.precision)
            finally:
                index.close()
        except IndexFormatError as exc:
            return str(exc)
        args.backend, args.precision = made.backend or args.backend, made.precision or args.precision
    if args.gallery and os.path.isdir(args.gallery) and any(
            p.is_dir() and not p.name.startswith(".") for p in os.scandir(args.gallery)):
        try:
            class_folders(args.gallery, allow_none=True)  # an empty class folder: say which, now
        except GalleryError as exc:
            return str(exc)
    elif args.gallery and os.path.exists(args.gallery) and not os.path.isdir(args.gallery):
        return f"--gallery {args.gallery} is a file, not a folder"
    return None
