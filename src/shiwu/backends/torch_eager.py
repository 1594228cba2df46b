"""PyTorch eager execution: the reference every other backend is checked against."""

from __future__ import annotations

import threading

import numpy as np
import torch

from ..models.model_files import pick_logits
from . import BackendUnavailable, BatchedRun


class TorchBackend(BatchedRun):
    name = "torch"

    def __init__(self, spec, *, size: int, precision: str = "fp32", threads: int | None = None):
        from ..cpu import default_threads

        if precision not in ("fp32", "bf16"):
            raise BackendUnavailable(f"torch runs fp32 and bf16, not {precision}")
        self.precision = precision
        self.threads = threads or default_threads()
        torch.set_num_threads(self.threads)
        self.dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        self.model = spec.build(size)
        self.output_index = spec.output_index
        self.fixed_batch = spec.fixed_batch
        self._lock = threading.Lock()

    def _run(self, batch: np.ndarray) -> np.ndarray:
        with self._lock, torch.inference_mode(), torch.autocast(
                "cpu", dtype=self.dtype, enabled=self.dtype != torch.float32):
            output = self.model(torch.from_numpy(batch))
            return pick_logits(output, self.output_index).float().numpy()
