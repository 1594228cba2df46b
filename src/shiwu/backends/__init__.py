"""Runtimes that turn a float32 NCHW batch into logits. One file per runtime.

Every backend has ``name``, ``precision`` and ``run(batch) -> logits`` (numpy in, numpy out),
so the rest of shiwu never touches a runtime's own types. Runtime modules are imported only
when chosen: the ONNX Runtime and OpenVINO paths must start without torch.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from .runtimes import BACKENDS, BackendUnavailable, backend_class  # noqa: F401 - the package's API
from .runtimes import PRECISIONS as RUN_PRECISIONS

# "auto": the fastest precision whose accuracy passes the policy on this CPU (backends.policy)
PRECISIONS = ("auto", *RUN_PRECISIONS)


class Backend(Protocol):
    name: str
    precision: str

    def run(self, batch: np.ndarray) -> np.ndarray: ...


def unsupported(spec, name: str) -> str:
    kind = "an ONNX file" if spec.onnx_file is not None else "an OpenVINO IR"
    return (f"{spec.name} is {kind}: {name} cannot run it; use --backend "
            f"{' or '.join(spec.runtimes)} (or auto)")


class BatchedRun:
    """``run(batch) -> logits`` and ``run_with_embedding(batch) -> (logits, embedding)`` for any
    batch size, over a backend's ``_infer(batch, embedding)``. One inference gives both
    outputs; the embedding is the classifier's input, not yet L2-normalised.

    Graphs that take one image only (exported with a fixed batch, or traced from a model whose
    ``len(x)`` became the constant 1) are found out at their first larger batch and then fed
    one image at a time (a genuine error shows again on the first single image)."""

    fixed_batch: int | None = None
    has_embedding: bool = False
    # Runtimes that can also take the cropped photos' uint8 pixels (N, H, W, 3) and normalise
    # them inside the graph (see pixel_input) set this and implement ``_infer_pixels``.
    pixels_in: bool = False
    no_embedding_reason: str = "this model has no linear classifier layer whose input could be the embedding"

    def _infer(self, batch: np.ndarray, embedding: bool) -> tuple[np.ndarray, np.ndarray | None]:
        raise NotImplementedError

    def _infer_pixels(self, pixels: np.ndarray, embedding: bool) -> tuple[np.ndarray, np.ndarray | None]:
        raise NotImplementedError

    def pixel_front(self) -> bool:
        """Whether uint8 pixels are normalised inside the graph (that graph built now, once);
        False: they would be normalised in numpy, so a caller had better send floats."""
        return False

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self._batched(batch, False)[0]

    def run_pixels(self, pixels: np.ndarray, embedding: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """(logits, embedding or None) for uint8 (N, H, W, 3) pixels, where ``pixels_in``."""
        if embedding:
            self.require_embedding()
        return self._batched(pixels, embedding, self._infer_pixels)

    def run_with_embedding(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.require_embedding()
        return self._batched(batch, True)

    def require_embedding(self) -> None:
        if not self.has_embedding:
            raise BackendUnavailable(f"no embedding from {self.name}: {self.no_embedding_reason}")

    def _batched(self, batch: np.ndarray, embedding: bool, infer=None):
        infer = infer or self._infer
        if self.fixed_batch is None and len(batch) > 1:
            try:
                return infer(batch, embedding)
            except Exception:  # noqa: BLE001 - each runtime raises its own type for a shape clash
                self.fixed_batch = 1
        if self.fixed_batch is None or len(batch) == self.fixed_batch:
            return infer(batch, embedding)
        if self.fixed_batch != 1:
            raise BackendUnavailable(f"this graph takes batches of exactly {self.fixed_batch} images")
        parts = [infer(batch[i:i + 1], embedding) for i in range(len(batch))]
        return (np.concatenate([p[0] for p in parts]),
                np.concatenate([p[1] for p in parts]) if embedding else None)


def run_in_fixed_batches(run, batch: np.ndarray, fixed: int | None) -> np.ndarray:
    """Feed a graph that was exported for one batch size (usually 1) a batch of any size."""
    if fixed is None or len(batch) == fixed:
        return run(batch)
    if fixed != 1:
        raise BackendUnavailable(f"this graph takes batches of exactly {fixed} images")
    return np.concatenate([run(batch[i:i + 1]) for i in range(len(batch))])


def create_backend(name: str, spec, *, size: int, precision: str = "fp32",
                   threads: int | None = None, max_drop: float | None = None, **options) -> Backend:
    """``name`` or ``precision`` "auto": the fastest setting that passes the accuracy policy on
    this CPU (backends.auto). An explicit int8 is judged by the same policy and refused with its
    numbers when it loses more than ``max_drop`` (relative top-1; default 1%)."""
    if precision not in PRECISIONS:
        raise BackendUnavailable(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    if name != "auto":  # a typo or another machine's word ("cuda"): said with the choices, before
        backend_class(name)  # precision auto looked it up in its own table (a KeyError)
    if spec.fixed_size is not None and size != spec.fixed_size:
        raise BackendUnavailable(f"{spec.name} takes {spec.fixed_size}x{spec.fixed_size} inputs only "
                                 f"(fixed in the file), not {size}")
    if name != "auto" and not spec.supports(name):
        raise BackendUnavailable(unsupported(spec, name))
    if name == "auto" or precision == "auto":
        from .auto import select
        return select(spec, size=size, precision=precision, threads=threads, backend=name,
                      max_drop=max_drop, **options)
    backend = backend_class(name)(spec, size=size, precision=precision, threads=threads, **options)
    if precision == "int8":
        from .policy import DEFAULT_MAX_DROP, require
        require(spec, backend, size, max_drop=DEFAULT_MAX_DROP if max_drop is None else max_drop,
                calibration=options.get("calibration"))
    return backend
