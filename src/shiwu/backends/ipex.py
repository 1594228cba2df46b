"""Intel Extension for PyTorch, used when it is importable and matches this torch.

IPEX's last release is 2.8; there is no build for torch 2.13, so on most installs this backend
explains why it is missing instead of running. ONNX Runtime and OpenVINO cover what it did
(oneDNN kernels, graph fusion, bf16 and int8 on Intel CPUs).
"""

from __future__ import annotations

import threading

import numpy as np
import torch

from ..models.model_files import pick_logits
from . import BackendUnavailable, BatchedRun

WHY_MISSING = ("Intel Extension for PyTorch is not available: its last release (2.8) does not "
               "match torch {torch}. Use --backend openvino or onnxruntime, which cover the same "
               "CPU optimisations.")


def _import():
    try:
        import intel_extension_for_pytorch as ipex
    except Exception:  # ImportError, or an ABI error when it was built for another torch
        raise BackendUnavailable(WHY_MISSING.format(torch=torch.__version__)) from None
    return ipex


class IpexBackend(BatchedRun):
    name = "ipex"

    def __init__(self, spec, *, size: int, precision: str = "fp32", threads: int | None = None):
        from ..cpu import default_threads

        ipex = _import()
        if precision not in ("fp32", "bf16"):
            raise BackendUnavailable("ipex runs fp32 and bf16 here")
        self.precision = precision
        self.threads = threads or default_threads()
        torch.set_num_threads(self.threads)
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        self.dtype = dtype
        self.module = ipex.optimize(spec.build(size), dtype=dtype)
        self.output_index = spec.output_index
        self.fixed_batch = spec.fixed_batch
        self._lock = threading.Lock()

    def _run(self, batch: np.ndarray) -> np.ndarray:
        with self._lock, torch.inference_mode(), torch.autocast("cpu", dtype=self.dtype,
                                                                 enabled=self.dtype != torch.float32):
            output = self.module(torch.from_numpy(batch))
            return pick_logits(output, self.output_index).float().numpy()
