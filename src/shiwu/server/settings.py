"""Everything `shiwu serve` can be told, in one place that imports nothing heavy."""

from __future__ import annotations

import dataclasses
import json
import os
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
    # embeddings (shiwu.server.vectors)
    index: str | None = None          # an index folder or Milvus store for POST /v1/search
    gallery: str | None = None        # a gallery folder: recognize uses it, POST /v1/gallery adds to it
    gallery_mode: str = "merge"       # as `shiwu predict --gallery-mode`
    min_similarity: float | None = None  # None: shiwu.gallery's measured default
    # access
    api_key: str | None = None        # required on every POST (and thumbnails) when set
    cors_origins: tuple[str, ...] = ()  # CORS is off unless origins are listed
    # Before /readyz says ready, run every batch size 1..max batch size (twice), within this many
    # seconds: the first call at a new shape allocates, picks kernels, and on torchscript
    # re-optimises the graph (seconds, not milliseconds). 0 turns warm-up off.
    warmup_seconds: float = 20.0

    def __post_init__(self) -> None:
        if isinstance(self.model, dict):  # from to_env: the ModelRef of `shiwu serve --model ...`
            from ..models.spec import ModelRef
            self.model = ModelRef.of(self.model)
        self.cors_origins = tuple(self.cors_origins or ())
        if self.max_batch_size is not None and int(self.max_batch_size) < 1:
            raise ValueError("max_batch_size must be at least 1 (or None: measured)")
        for name in ("max_queue", "max_upload_bytes", "max_images", "max_pixels",
                     "max_topk", "decode_threads"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.max_wait_ms < 0:
            raise ValueError("max_wait_ms must not be negative")
        if self.warmup_seconds < 0:
            raise ValueError("warmup_seconds must not be negative")
        if self.request_timeout <= 0:
            raise ValueError("request_timeout must be positive")
        if self.max_queue < self.max_images:
            self.max_queue = self.max_images  # one full request must always fit

    def to_env(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_env(cls) -> "ServerSettings":
        raw = os.environ.get(ENV_SETTINGS)
        settings = cls(**json.loads(raw)) if raw else cls()
        if settings.api_key is None and os.environ.get(ENV_API_KEY):
            settings.api_key = os.environ[ENV_API_KEY]
        return settings
