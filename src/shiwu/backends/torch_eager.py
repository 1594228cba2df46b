"""PyTorch eager execution: the reference every other backend is checked against."""

from __future__ import annotations

import numpy as np
import torch

from ..cpu import default_threads


class TorchBackend:
    name = "torch"
    precision = "fp32"

    def __init__(self, spec, *, size: int, threads: int | None = None):
        self.threads = threads or default_threads()
        torch.set_num_threads(self.threads)
        self.model = spec.build(size)

    def run(self, batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.model(torch.from_numpy(batch)).numpy()
