"""Intel Extension for PyTorch, used when it is importable and matches this torch.

IPEX's last release is 2.8; there is no build for torch 2.13, so on most installs this backend
explains why it is missing instead of running. ONNX Runtime and OpenVINO cover what it did
(oneDNN kernels, graph fusion, bf16 and int8 on Intel CPUs).
"""

from __future__ import annotations

import torch

from ..models.embedding import with_outputs
from . import BackendUnavailable
from .torch_common import TorchRun

WHY_MISSING = ("Intel Extension for PyTorch is not available: its last release (2.8) does not "
               "match torch {torch}. Use --backend openvino or onnxruntime, which cover the same "
               "CPU optimisations.")


def _import():
    try:
        import intel_extension_for_pytorch as ipex
    except Exception:  # ImportError, or an ABI error when it was built for another torch
        raise BackendUnavailable(WHY_MISSING.format(torch=torch.__version__)) from None
    return ipex


class IpexBackend(TorchRun):
    name = "ipex"

    def __init__(self, spec, *, size: int, precision: str = "fp32", threads: int | None = None):
        from ..cpu import default_threads

        ipex = _import()
        if precision not in ("fp32", "bf16"):
            raise BackendUnavailable("ipex runs fp32 and bf16 here")
        self.precision = precision
        self.threads = threads or default_threads()
        torch.set_num_threads(self.threads)
        self.dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        self._use(spec, ipex.optimize(with_outputs(spec.build(size), spec), dtype=self.dtype))
