"""The one table of runtimes: what each backend is, runs, reads and calibrates with.

``create_backend``, ``--backend auto``, ``shiwu tune``, ``shiwu bench`` and the accuracy policy
all read this table (ultralytics' ``export_formats()`` idea), so adding a runtime or a precision
is one row here. Nothing is imported to read it: a runtime module is loaded when it is chosen.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from ..errors import ShiwuError


class BackendUnavailable(ShiwuError, RuntimeError):
    """A backend or precision cannot run here; the message says why and what to install."""


@dataclass(frozen=True)
class Runtime:
    name: str                       # --backend value
    module: str                     # shiwu.backends.<module>
    cls: str                        # the backend class in it
    precisions: tuple[str, ...]     # what it can run, fp32 first
    export_format: str              # what it reads: the torch module, TorchScript, ONNX, OpenVINO IR
    calibration: str | None         # who quantizes its int8 (None: it has no int8)
    distribution: str               # the pip distribution whose version keys caches and verdicts
    auto: bool = True               # a candidate of --backend auto (compile's first run is too slow)
    default_bench: bool = True      # measured by `shiwu bench` / `shiwu tune` unless told otherwise

    def runs(self, precision: str) -> bool:
        return precision in self.precisions


RUNTIMES: tuple[Runtime, ...] = (
    # most likely winner first: --backend auto measures them in this order
    Runtime("openvino", "openvino", "OpenVINOBackend", ("fp32", "bf16", "int8"), "openvino-ir",
            "nncf", "openvino"),
    Runtime("onnxruntime", "onnxruntime", "OnnxRuntimeBackend", ("fp32", "int8"), "onnx",
            "onnxruntime.quantization", "onnxruntime"),
    Runtime("torchscript", "torchscript", "TorchScriptBackend", ("fp32",), "torchscript", None, "torch"),
    Runtime("torch", "torch_eager", "TorchBackend", ("fp32", "bf16"), "torch", None, "torch"),
    Runtime("compile", "compile", "CompileBackend", ("fp32",), "torch", None, "torch",
            auto=False, default_bench=False),
    Runtime("ipex", "ipex", "IpexBackend", ("fp32", "bf16"), "torch", None,
            "intel-extension-for-pytorch", auto=False, default_bench=False),
)

BY_NAME = {r.name: r for r in RUNTIMES}
BACKENDS = ("auto", *BY_NAME)
PRECISIONS = ("fp32", "bf16", "int8")
# what a reduced precision needs from the CPU to be worth running (any one flag of each set)
# How each runtime's int8 model is made (backends/quantize.py). Part of the int8 cache entry's key
# and of the accuracy verdict's (backends/policy.py): a change here makes new models, and their
# verdicts are measured again instead of being inherited from models made the old way.
# SmoothQuant (NNCF, transformers such as Chinese-CLIP's ViT) moves the activation outliers of
# each MatMul's input into its weights (alpha: how much), so per-tensor int8 activations keep them.
SMOOTH_QUANT_ALPHA = 0.95
INT8_RECIPES = {"onnxruntime": "qdq-w8-perchannel-a8u-minmax-strided-float-classifier-upto32MiB-v4",
                "openvino": f"nncf-perchannel-sq{SMOOTH_QUANT_ALPHA}-attention-float-layers-v4"}

CPU_NEEDS = {"bf16": {"avx512_bf16", "amx_bf16"}, "int8": {"avx512_vnni", "avx_vnni", "amx_int8"}}


def runtime(name: str) -> Runtime:
    return BY_NAME[name]


def runtimes_for(precision: str, *, auto_only: bool = False) -> tuple[str, ...]:
    return tuple(r.name for r in RUNTIMES if r.runs(precision) and (r.auto or not auto_only))


def bench_defaults() -> tuple[str, ...]:
    return tuple(r.name for r in RUNTIMES if r.default_bench)


def distributions() -> tuple[str, ...]:
    extra = ("nncf",)  # the quantizer's version changes an int8 model as much as the runtime's
    return tuple(dict.fromkeys([r.distribution for r in RUNTIMES] + list(extra)))


def cpu_lacks(precision: str, flags: frozenset[str] | set[str]) -> str | None:
    """Why this CPU cannot run ``precision`` fast (None: it can)."""
    needs = CPU_NEEDS.get(precision)
    if needs is None or needs & set(flags):
        return None
    names = {"bf16": "AVX-512 BF16 or AMX", "int8": "AVX-512 VNNI, AVX-VNNI or AMX"}
    return f"this CPU has no {names[precision]} instructions"


def fused_int8_saturates() -> bool:
    """True on an x86 CPU without VNNI or AMX, where ONNX Runtime's fused int8 kernels clip
    their 16-bit partial sums (backends/onnxruntime.py runs int8 graphs unfused there). Read
    from the hardware, not from what shiwu was told: ONNX Runtime dispatches by CPUID."""
    from ..cpu import hardware_flags

    flags = hardware_flags()
    return "sse2" in flags and cpu_lacks("int8", flags) is not None


def backend_class(name: str):
    """The backend class of runtime ``name``, its module imported only now."""
    try:
        entry = BY_NAME[name]
    except KeyError:
        raise BackendUnavailable(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}") from None
    return getattr(importlib.import_module(f"{__package__}.{entry.module}"), entry.cls)
