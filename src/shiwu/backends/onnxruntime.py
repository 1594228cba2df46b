"""ONNX Runtime on the CPU: the exported graph with ORT's fusions, fp32 or calibrated int8.

torch is not imported here: with the ONNX file already cached, this backend starts without it.
"""

from __future__ import annotations

import importlib.metadata

import numpy as np

from . import BackendUnavailable, BatchedRun, export
from .cache import discard, is_cached

PRECISIONS = ("fp32", "int8")


def _import():
    try:
        import onnxruntime
    except ImportError:
        raise BackendUnavailable("onnxruntime is not installed: pip install onnxruntime") from None
    return onnxruntime


class OnnxRuntimeBackend(BatchedRun):
    name = "onnxruntime"

    def __init__(self, spec, *, size: int, precision: str = "fp32", threads: int | None = None,
                 calibration=None):
        from ..cpu import default_threads

        ort = _import()
        if precision not in PRECISIONS:
            raise BackendUnavailable(f"onnxruntime runs {' and '.join(PRECISIONS)}, not {precision}")
        self.precision = precision
        self.threads = threads or default_threads()
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3

        def locate(rebuild: bool):
            if precision == "int8":
                from .quantize import cached_onnx_int8
                return cached_onnx_int8(spec, size, calibration=calibration, rebuild=rebuild)
            return export.cached_onnx(spec, size, rebuild=rebuild)

        path = locate(False)
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own exception types for unreadable models
            if not is_cached(path):  # the user's own file: say why, never delete or rebuild it
                raise BackendUnavailable(f"onnxruntime cannot load {path}: {exc}") from None
            discard(path)
            path = locate(True)
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.model_path = path
        self.input_name = self.session.get_inputs()[0].name
        # a user's graph may have several outputs; only the logits are fetched
        self.output_names = [self.session.get_outputs()[spec.output_index or 0].name]
        self.fixed_batch = spec.fixed_batch

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(self.output_names, {self.input_name: batch})[0]


def version() -> str | None:
    try:
        return importlib.metadata.version("onnxruntime")
    except importlib.metadata.PackageNotFoundError:
        return None
