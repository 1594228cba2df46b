"""ONNX Runtime on the CPU: the exported graph with ORT's fusions, fp32 or calibrated int8.

torch is not imported here: with the ONNX file already cached, this backend starts without it.
"""

from __future__ import annotations

import importlib.metadata
import logging
import threading

import numpy as np

from . import BackendUnavailable, BatchedRun, export
from .runtimes import fused_int8_saturates
from ..cache import discard

PRECISIONS = ("fp32", "int8")
log = logging.getLogger(__name__)


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
        if fused_int8_saturates():
            # ORT would fuse the int8 graph's QuantizeLinear/DequantizeLinear pairs into integer
            # kernels that, without VNNI, add pairs of uint8 x int8 products in 16 bits
            # (vpmaddubsw) and clip: Lite0's int8 fell from 87.6% to 81.8% top-1 on imagenet-dev
            # on an AVX2 EPYC. Unfused, the graph runs as written (weights dequantized once,
            # activations rounded to their int8 levels, sums in float): 87.4%, the answers of
            # CPUs with VNNI, at a float model's cost. Graphs without QDQ nodes are unaffected.
            options.add_session_config_entry("session.disable_quant_qdq", "1")
            if precision == "int8":
                log.info("onnxruntime int8 on this CPU (no VNNI): run unfused, as the graph says, for "
                         "the answers CPUs with VNNI give; slower than fp32 here")

        def locate(rebuild: bool):
            if precision == "int8":
                from .quantize import cached_onnx_int8
                return cached_onnx_int8(spec, size, calibration=calibration, rebuild=rebuild)
            return export.cached_onnx(spec, size, rebuild=rebuild)

        def load(path):
            return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

        self._load = load
        self._locate = locate
        self.model_path = locate(False)
        self.fixed_batch = spec.fixed_batch
        self.pixels_in = True
        self._normalisation = (spec.preprocessing.mean, spec.preprocessing.std)
        self._lock = threading.Lock()
        self._session = None
        # One session, not two, at start: the uint8-input graph is the one predict, batch and
        # serve use, and opening a session is most of a one-photo command's start-up. Opening it
        # also proves the graph loads; the float session opens at the first float batch (bench,
        # a caller's own arrays). A graph the uint8 front cannot wrap opens the float one now.
        self._pixel_session = self._open_pixel_session()
        if self._pixel_session is None:
            built = self.model_path
            self._open_float_session()  # rebuilds an unreadable cache entry once
            if self.model_path != built:
                self._pixel_session = self._open_pixel_session()
            self._pixel_session = self._pixel_session or False
        # shiwu's graphs: output 0 is the logits, output 1 (where there is one) the embedding
        opened = self._pixel_session or self._session
        outputs = [o.name for o in opened.get_outputs()]
        self.has_embedding = len(outputs) > 1
        self.output_names = outputs[:2]

    def _open_pixel_session(self):
        from .pixel_input import cached_pixel_onnx

        try:
            return self._load(cached_pixel_onnx(self.model_path, *self._normalisation))
        except Exception as exc:  # noqa: BLE001 - a user's graph ONNX Runtime or onnx rejects
            log.debug("no uint8 input for %s (%s): normalising in numpy", self.model_path, exc)
            return None

    def _open_float_session(self):
        with self._lock:
            if self._session is not None:
                return self._session
            try:
                session = self._load(self.model_path)
            except Exception:  # ORT raises its own exception types: an unreadable entry is rebuilt once
                discard(self.model_path)
                self.model_path = self._locate(True)
                try:
                    session = self._load(self.model_path)
                except Exception as exc:  # noqa: BLE001 - e.g. an operator this ORT lacks
                    raise BackendUnavailable(f"onnxruntime cannot load {self.model_path.stem}: {exc}") from None
            self.input_name = session.get_inputs()[0].name
            self._session = session
            return session

    def pixel_front(self) -> bool:
        return bool(self._pixel_session)  # opened (or found impossible) at start

    @property
    def session(self):
        """The float-input session (opened at first use)."""
        return self._session or self._open_float_session()

    def _infer(self, batch: np.ndarray, embedding: bool):
        session = self.session
        names = self.output_names if embedding else self.output_names[:1]
        values = session.run(names, {self.input_name: batch})
        return values[0], values[1] if embedding else None

    def _infer_pixels(self, pixels: np.ndarray, embedding: bool):
        from .pixel_input import PIXELS_NAME, normalise

        if not self._pixel_session:
            return self._infer(normalise(pixels, *self._normalisation), embedding)
        names = self.output_names if embedding else self.output_names[:1]
        values = self._pixel_session.run(names, {PIXELS_NAME: pixels})
        return values[0], values[1] if embedding else None


def version() -> str | None:
    try:
        return importlib.metadata.version("onnxruntime")
    except importlib.metadata.PackageNotFoundError:
        return None
