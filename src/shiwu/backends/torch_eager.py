"""PyTorch eager execution: the reference every other backend is checked against."""

from __future__ import annotations

import torch

from ..models.embedding import with_outputs
from . import BackendUnavailable
from .torch_common import TorchRun


class TorchBackend(TorchRun):
    name = "torch"

    def __init__(self, spec, *, size: int, precision: str = "fp32", threads: int | None = None):
        from ..cpu import default_threads

        if precision not in ("fp32", "bf16"):
            raise BackendUnavailable(f"torch runs fp32 and bf16, not {precision}")
        self.precision = precision
        self.threads = threads or default_threads()
        torch.set_num_threads(self.threads)
        self.dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        self._use(spec, with_outputs(spec.build(size), spec))
        self.model = self.module  # the network (tests and benchmarks reach it here)
