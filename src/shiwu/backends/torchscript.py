"""TorchScript: a traced, frozen graph (batch norm folded into convolutions), cached on disk."""

from __future__ import annotations

import threading

import numpy as np
import torch

from ..models.model_files import pick_logits
from . import BackendUnavailable, BatchedRun, cache
from .export import export_torchscript, torch_version


class TorchScriptBackend(BatchedRun):
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
                                runtime_version=f"torch-{torch_version()}", suffix=".pt")
        if not path.exists():
            export_torchscript(spec, size, path)
        try:
            self.module = torch.jit.load(str(path), map_location="cpu")
        except (RuntimeError, OSError, ValueError):
            cache.discard(path)
            export_torchscript(spec, size, path)
            self.module = torch.jit.load(str(path), map_location="cpu")
        self.model_path = path
        self.output_index = spec.output_index
        self.fixed_batch = spec.fixed_batch
        self._lock = threading.Lock()

    def _run(self, batch: np.ndarray) -> np.ndarray:
        with self._lock, torch.inference_mode():
            return pick_logits(self.module(torch.from_numpy(batch)), self.output_index).numpy()
