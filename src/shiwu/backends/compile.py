"""torch.compile with the inductor CPU backend: generated C++/OpenMP kernels.

The first call of each batch size compiles (tens of seconds); inductor's on-disk cache, kept
under shiwu's cache directory, makes later processes start faster.
"""

from __future__ import annotations

import os

import torch

from ..models.embedding import with_outputs
from . import BackendUnavailable
from ..cache import cache_dir
from .torch_common import TorchRun


class CompileBackend(TorchRun):
    name = "compile"
    precision = "fp32"

    def __init__(self, spec, *, size: int, precision: str = "fp32", threads: int | None = None):
        from ..cpu import default_threads

        if precision != "fp32":
            raise BackendUnavailable("compile runs fp32 only; use openvino for bf16 or int8")
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_dir() / "inductor"))
        self.threads = threads or default_threads()
        torch.set_num_threads(self.threads)
        network = with_outputs(spec.build(size), spec)
        self._use(spec, torch.compile(network, backend="inductor", dynamic=False))
