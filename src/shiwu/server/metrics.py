"""The Prometheus metrics of one app (``GET /metrics``)."""

from __future__ import annotations

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram,
                               disable_created_metrics, generate_latest)

__all__ = ["Metrics", "CONTENT_TYPE_LATEST", "generate_latest"]


class Metrics:
    """Prometheus metrics of one app (own registry, so several apps can live in one process)."""

    def __init__(self):
        disable_created_metrics()  # the *_created series only add noise to every scrape
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("shiwu_http_requests", "HTTP requests by path, method and status",
                                ["path", "method", "status"], registry=r)
        self.latency = Histogram("shiwu_http_request_duration_seconds", "HTTP request latency",
                                 ["path"], registry=r,
                                 buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))
        self.errors = Counter("shiwu_errors", "Failed requests and images, by kind", ["kind"],
                              registry=r)
        self.images = Counter("shiwu_images", "Images received, by outcome", ["outcome"], registry=r)
        self.batch_size = Histogram("shiwu_batch_size", "Images per inference batch", registry=r,
                                    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64))
        self.inference = Histogram("shiwu_inference_duration_seconds", "Time of one inference batch",
                                   registry=r, buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5))
        self.queue = Gauge("shiwu_queue_images", "Images decoded and waiting for inference", registry=r)
        self.in_flight = Gauge("shiwu_images_in_progress", "Images being decoded, queued or inferred",
                               registry=r)
        self.ready = Gauge("shiwu_model_ready", "1 once the model is loaded and warmed up", registry=r)
        self.max_batch = Gauge("shiwu_max_batch_size", "Largest inference batch the server forms",
                               registry=r)
        self.disconnects = Counter("shiwu_client_disconnects", "Clients that went away before their "
                                   "request was read or answered", registry=r)
        self.inflight_bytes = Gauge("shiwu_inflight_body_bytes", "Request body bytes reserved "
                                    "(being read or held)", registry=r)
        self.decode_pixels = Gauge("shiwu_big_decode_pixels", "Pixels of big images admitted and "
                                   "not yet done", registry=r)
        self.draining = Gauge("shiwu_draining", "1 once a shutdown signal arrived", registry=r)

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.inference.observe(seconds)
