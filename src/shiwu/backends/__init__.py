"""Runtimes that turn a float32 NCHW batch into logits. One file per runtime.

Every backend has ``name``, ``precision`` and ``run(batch) -> logits`` (numpy in, numpy out),
so the rest of shiwu never touches a runtime's own types.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

BACKENDS = ("auto", "torch")
PRECISIONS = ("fp32",)


class Backend(Protocol):
    name: str
    precision: str

    def run(self, batch: np.ndarray) -> np.ndarray: ...


class BackendUnavailable(RuntimeError):
    """A backend or precision cannot run here; the message says why and what to install."""


def create_backend(name: str, spec, *, size: int, precision: str = "fp32",
                   threads: int | None = None) -> Backend:
    if precision not in PRECISIONS:
        raise BackendUnavailable(f"precision {precision!r} is not available; choose from {PRECISIONS}")
    if name in ("auto", "torch"):
        from .torch_eager import TorchBackend
        return TorchBackend(spec, size=size, threads=threads)
    raise BackendUnavailable(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}")
