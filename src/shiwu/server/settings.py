"""Everything `shiwu serve` can be told, in one place that imports nothing heavy."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass

# --max-batch-size auto: at start-up, time the model on batches of these sizes and use the one
# with the lowest cost per image, but batch at all only when that is at least BATCH_GAIN_NEEDED
# times cheaper per image than one at a time. On a small CPU some runtimes gain nothing from
# batches (OpenVINO on EfficientNet-Lite0 here: 1.06x), and a batch then only makes the
# images in it wait for each other; others gain (ONNX Runtime: ~1.3x).
AUTO_BATCH_SIZES = (1, 4, 8, 16)
BATCH_GAIN_NEEDED = 1.10
ENV_SETTINGS = "SHIWU_SERVE_SETTINGS"  # how the CLI hands settings to uvicorn's worker processes
ENV_API_KEY = "SHIWU_API_KEY"
MB = 1024 * 1024
# An image with more pixels than this once decoded (after JPEG draft scaling) is "big": it is
# decoded on its own lane, behind a pixel budget, so small photos never queue behind it. A
# 4 MP PNG decodes in ~40 ms here; a 7000x7000 one in ~450 ms.
BIG_PIXELS = 4_000_000


@dataclass
class ServerSettings:
    # the model, as for `shiwu predict`
    model: str | None = None
    backend: str = "auto"
    precision: str = "fp32"
    threads: int | None = None
    size: int | None = None
    calibration: str | None = None    # photos to calibrate --precision int8 on
    # micro-batching
    max_batch_size: int | None = None  # None: measured at start-up (see AUTO_BATCH_SIZES)
    max_wait_ms: float = 5.0
    max_queue: int = 256              # images in progress (decoding, queued, inferred); 503 above
    # limits
    max_upload_bytes: int = 20 * MB   # whole request body; 413 above
    max_images: int = 16              # images in one request; 413 above
    max_pixels: int = 50_000_000      # per image, checked from the header; 422 above
    max_topk: int = 100
    request_timeout: float = 30.0     # seconds for reading the body (408) and answering (504)
    decode_threads: int = 2           # threads decoding and preprocessing uploads
    # embeddings (shiwu.server.served_index, served_gallery)
    index: str | None = None          # an index folder or Milvus store for POST /v1/search
    gallery: str | None = None        # a gallery folder: recognize uses it, POST /v1/gallery adds to it
    gallery_mode: str = "merge"       # as `shiwu predict --gallery-mode`
    min_similarity: float | None = None  # None: shiwu.gallery's measured default
    # Admission, before a body is read: request bodies in flight may add up to this many bytes
    # (Content-Length, or max_upload_bytes when the client does not say); 503 + Retry-After
    # above. Bodies are spooled to temporary files past 1 MiB each, so this bounds disk and
    # the in-memory spools, and with it how many uploads are being read at once.
    max_inflight_bytes: int = 256 * MB
    # Decoded pixels admitted and not yet done, counting only "big" images (over BIG_PIXELS once
    # decoded, after JPEG draft scaling): a big image decodes at ~110 MP/s here, so this bounds
    # the decode work queued behind the big lane (800 MP: ~7 s, one full request of 16 x 50 MP).
    # Requests that do not fit get 503 + Retry-After instead of a 504 later.
    max_decode_pixels: int = 800_000_000
    # connections
    header_timeout: float = 10.0      # seconds from connect (or the last answer) to a full request head
    keep_alive_timeout: float = 5.0   # idle keep-alive connections are closed after this many seconds
    max_connections: int = 1000       # open connections; over it a new one gets 503 and is closed
    graceful_timeout: float = 20.0    # SIGTERM: seconds to answer what was accepted, then exit
    # access
    api_key: str | None = None        # required on every POST (and thumbnails) when set
    cors_origins: tuple[str, ...] = ()  # CORS is off unless origins are listed
    # Host header names the server answers to (see access.py); "*" any. The CLI gives the
    # loopback names when bound to loopback, "*" otherwise, unless --allowed-hosts is given.
    allowed_hosts: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")
    log_level: str = "info"           # shiwu's own log records below this level are not shown
    # Before /readyz says ready, run every batch size 1..max batch size (twice), within this many
    # seconds: the first call at a new shape allocates, picks kernels, and on torchscript
    # re-optimises the graph (seconds, not milliseconds). 0 turns warm-up off.
    warmup_seconds: float = 20.0

    def __post_init__(self) -> None:
        if isinstance(self.model, dict):  # from to_env: the ModelRef of `shiwu serve --model ...`
            from ..models.spec import ModelRef
            self.model = ModelRef.of(self.model)
        self.cors_origins = tuple(self.cors_origins or ())
        self.allowed_hosts = tuple(h.strip() for h in (self.allowed_hosts or ()) if h.strip())
        if not self.allowed_hosts:
            raise ValueError("allowed_hosts must name at least one host (or '*': any)")
        for origin in self.cors_origins:
            if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
                raise ValueError(f"--cors-origin {origin!r} is not an origin (scheme://host[:port], "
                                 "no path)")
        if self.max_batch_size is not None and int(self.max_batch_size) < 1:
            raise ValueError("max_batch_size must be at least 1 (or None: measured)")
        for name in ("max_queue", "max_upload_bytes", "max_images", "max_pixels",
                     "max_topk", "decode_threads", "max_inflight_bytes", "max_decode_pixels",
                     "max_connections"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.max_wait_ms < 0:
            raise ValueError("max_wait_ms must not be negative")
        if self.warmup_seconds < 0:
            raise ValueError("warmup_seconds must not be negative")
        for name in ("request_timeout", "header_timeout", "keep_alive_timeout", "graceful_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.api_key is not None:
            try:  # compared as UTF-8 bytes (deps.require_api_key): it must be encodable
                self.api_key.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("the API key is not valid UTF-8 text (check the locale it was "
                                 "typed in, or use ASCII)") from None
            if not self.api_key.isprintable():
                raise ValueError("the API key must be printable text (no control characters)")
        if self.max_queue < self.max_images:
            self.max_queue = self.max_images  # one full request must always fit
        # one body of the largest allowed size must always fit
        self.max_inflight_bytes = max(int(self.max_inflight_bytes), int(self.max_upload_bytes))

    def to_env(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_env(cls) -> "ServerSettings":
        raw = os.environ.get(ENV_SETTINGS)
        settings = cls(**json.loads(raw)) if raw else cls()
        if settings.api_key is None and os.environ.get(ENV_API_KEY):
            settings.api_key = os.environ[ENV_API_KEY]
        return settings
