"""The runtimes shiwu can run a model on, which module implements each, and the error raised
when one cannot run here.

A module of its own (not the package ``__init__``) so that ``auto`` and any runtime can read the
table without importing the package that imports them: no import circle.
"""

from __future__ import annotations

import importlib

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


class BackendUnavailable(RuntimeError):
    """A backend or precision cannot run here; the message says why and what to install."""


def backend_class(name: str):
    try:
        module, cls = _IMPLEMENTATIONS[name]
    except KeyError:
        raise BackendUnavailable(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}") from None
    return getattr(importlib.import_module(f"{__package__}.{module}"), cls)
