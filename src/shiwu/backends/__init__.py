"""Runtimes that turn a float32 NCHW batch into logits. One file per runtime.

Every backend has ``name``, ``precision`` and ``run(batch) -> logits`` (numpy in, numpy out),
so the rest of shiwu never touches a runtime's own types. Runtime modules are imported only
when chosen: the ONNX Runtime and OpenVINO paths must start without torch.
"""

from __future__ import annotations

import importlib
from typing import Protocol

import numpy as np

BACKENDS = ("auto", "torch", "torchscript", "compile", "onnxruntime", "openvino", "ipex")
PRECISIONS = ("fp32", "bf16", "int8")

# name -> (module, class)
_IMPLEMENTATIONS = {
    "torch": ("torch_eager", "TorchBackend"),
    "torchscript": ("torchscript", "TorchScriptBackend"),
    "compile": ("compile", "CompileBackend"),
    "onnxruntime": ("onnxruntime", "OnnxRuntimeBackend"),
    "openvino": ("openvino", "OpenVINOBackend"),
    "ipex": ("ipex", "IpexBackend"),
}


class Backend(Protocol):
    name: str
    precision: str

    def run(self, batch: np.ndarray) -> np.ndarray: ...


class BackendUnavailable(RuntimeError):
    """A backend or precision cannot run here; the message says why and what to install."""


def backend_class(name: str):
    try:
        module, cls = _IMPLEMENTATIONS[name]
    except KeyError:
        raise BackendUnavailable(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}") from None
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)


def create_backend(name: str, spec, *, size: int, precision: str = "fp32",
                   threads: int | None = None, **options) -> Backend:
    if precision not in PRECISIONS:
        raise BackendUnavailable(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    if name == "auto":
        from .auto import select
        return select(spec, size=size, precision=precision, threads=threads, **options)
    return backend_class(name)(spec, size=size, precision=precision, threads=threads, **options)
