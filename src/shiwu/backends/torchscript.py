"""TorchScript: a traced, frozen graph (batch norm folded into convolutions), cached on disk."""

from __future__ import annotations

import torch

from .. import cache
from . import BackendUnavailable
from .export import export_torchscript, graph_key, torch_version
from .torch_common import TorchRun


class TorchScriptBackend(TorchRun):
    name = "torchscript"
    precision = "fp32"

    def __init__(self, spec, *, size: int, precision: str = "fp32", threads: int | None = None):
        from ..cpu import default_threads

        if precision != "fp32":
            raise BackendUnavailable("torchscript runs fp32 only; use openvino for bf16 or int8")
        self.threads = threads or default_threads()
        torch.set_num_threads(self.threads)
        path = cache.entry_path(model=spec.name, fingerprint=spec.fingerprint(),
                                size=size, precision="fp32", kind="torchscript",
                                runtime_version=f"torch-{torch_version()}-{graph_key(spec)}", suffix=".pt")
        if not path.exists():
            export_torchscript(spec, size, path)
        try:
            module = torch.jit.load(str(path), map_location="cpu")
        except (RuntimeError, OSError, ValueError):
            cache.discard(path)
            export_torchscript(spec, size, path)
            module = torch.jit.load(str(path), map_location="cpu")
        self.model_path = path
        self._use(spec, module)
