"""torch.compile with the inductor CPU backend: generated C++/OpenMP kernels.

The first call of each batch size compiles (tens of seconds); inductor's on-disk cache, kept
under shiwu's cache directory, makes later processes start faster.
"""

from __future__ import annotations

import os
import threading

import numpy as np
import torch

from ..models.model_files import pick_logits
from . import BackendUnavailable, BatchedRun
from .cache import cache_dir


class CompileBackend(BatchedRun):
    name = "compile"
    precision = "fp32"

    def __init__(self, spec, *, size: int, precision: str = "fp32", threads: int | None = None):
        from ..cpu import default_threads

        if precision != "fp32":
            raise BackendUnavailable("compile runs fp32 only; use openvino for bf16 or int8")
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_dir() / "inductor"))
        self.threads = threads or default_threads()
        torch.set_num_threads(self.threads)
        self.module = torch.compile(spec.build(size), backend="inductor", dynamic=False)
        self.output_index = spec.output_index
        self.fixed_batch = spec.fixed_batch
        self._lock = threading.Lock()

    def _run(self, batch: np.ndarray) -> np.ndarray:
        with self._lock, torch.inference_mode():
            return pick_logits(self.module(torch.from_numpy(batch)), self.output_index).numpy()
