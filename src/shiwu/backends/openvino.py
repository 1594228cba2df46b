"""OpenVINO on the CPU: fp32 (asked for explicitly), bf16 where the CPU has it, int8 via NNCF.

OpenVINO defaults to bf16 on CPUs with AVX-512 BF16 or AMX, so "fp32" must set the inference
precision hint to f32; otherwise results silently change. torch is not imported here.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from . import BackendUnavailable, BatchedRun, export
from ..cache import discard, find, is_cached
from .graph_outputs import openvino_embedding_port
from .openvino_blobs import blob_folder
from .pixel_input import normalise

HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}  # int8 layers are fixed by the model itself


def _import():
    try:
        import openvino
    except ImportError:
        raise BackendUnavailable("openvino is not installed: pip install openvino") from None
    return openvino


def bf16_supported() -> bool:
    from ..cpu import cpu_flags

    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


class OpenVINOBackend(BatchedRun):
    name = "openvino"

    def __init__(self, spec, *, size: int, precision: str = "fp32", threads: int | None = None,
                 calibration=None):
        from ..cpu import default_threads

        ov = _import()
        if precision not in HINTS:
            raise BackendUnavailable(f"openvino runs fp32, bf16 and int8, not {precision}")
        if precision == "bf16" and not bf16_supported():
            from ..cpu import cpu_flags
            from .runtimes import cpu_lacks

            other = "fp32" if cpu_lacks("int8", cpu_flags()) else "fp32 or int8"  # int8 pays only with VNNI
            raise BackendUnavailable(f"this CPU has no bf16 instructions (AVX-512 BF16 or AMX); use {other}")
        self.precision = precision
        self.threads = threads or default_threads()
        core = ov.Core()
        config = {
            "INFERENCE_PRECISION_HINT": HINTS[precision],
            "INFERENCE_NUM_THREADS": self.threads,
            "PERFORMANCE_HINT": "LATENCY",
            # OpenVINO's own cache of compiled blobs: the second start skips compilation. Each
            # compilation is given a private folder of its own (openvino_blobs: a blob appears here
            # whole, never written in place under another process). A read-only cache's blobs are
            # read (OpenVINO compiles, without error, what is missing). One folder per inference
            # precision: OpenVINO 2026.4 names a blob without its precision hint, so a bf16 compile
            # imported the fp32 one, and the Chinese-CLIP ViT then answered NaN or crashed (SIGSEGV)
            "CACHE_DIR": str(find("openvino-blobs", HINTS[precision])),
        }

        def compile_model(model):
            with blob_folder(Path(config["CACHE_DIR"])) as folder:
                return core.compile_model(model, "CPU", {**config, "CACHE_DIR": folder})

        def locate(rebuild: bool):
            if precision == "int8":
                from .quantize import cached_openvino_int8
                return cached_openvino_int8(spec, size, calibration=calibration, rebuild=rebuild)
            return export.openvino_source(spec, size, rebuild=rebuild)

        def load(path):
            if spec.openvino_file is None:
                # shiwu's graphs: output 0 the logits, 1 the embedding. Compiling from the path
                # (not a read_model object) lets OpenVINO load its cached blob directly: no
                # ONNX parsing, and about half the peak memory for a large model.
                return compile_model(str(path)), 0, 1
            # the user's own IR: its logits where they are, the embedding found in the graph
            model = core.read_model(str(path))
            logits_at = spec.output_index or 0
            port = openvino_embedding_port(model, logits_at)
            if port is not None:
                model.add_outputs([port])
            return compile_model(model), logits_at, (
                len(model.outputs) - 1 if port is not None else None)

        self._load, self._locate, self._compile, self._config = load, locate, compile_model, config
        self.model_path = locate(False)
        self.fixed_batch = spec.fixed_batch
        self._lock = threading.Lock()  # one infer request each: calls from several threads take turns
        self._normalisation = (spec.preprocessing.mean, spec.preprocessing.std)
        self.request = None
        # shiwu's own graphs also take uint8 pixels (normalised by OpenVINO's PrePostProcessor,
        # saved once as an IR of its own). That graph is the one predict, batch and serve use,
        # so it is the one compiled at start; the float graph compiles at the first float batch.
        self.pixels_in = spec.openvino_file is None
        self._pixel_request = self._compile_pixels() if self.pixels_in else None
        if self._pixel_request is None:
            built = self.model_path
            self._float_request()  # rebuilds an unreadable cache entry once
            if self.pixels_in and self.model_path != built:
                self._pixel_request = self._compile_pixels()
            self._pixel_request = self._pixel_request or False
        else:
            self.logits_at, self.embedding_at = 0, 1
            outputs = len(self._pixel_request.model_outputs)
            if self.embedding_at >= outputs:
                self.embedding_at = None
        self.has_embedding = self.embedding_at is not None

    def _compile_pixels(self):
        """The uint8-input graph's infer request, or None for a graph the front cannot wrap."""
        from .pixel_input import cached_pixel_openvino

        try:
            path = cached_pixel_openvino(self.model_path, *self._normalisation)
            return self._compile(str(path)).create_infer_request()
        except RuntimeError:  # a graph the PrePostProcessor cannot front (or unreadable): floats
            return None

    def _float_request(self):
        with self._lock:
            if self.request is not None:
                return self.request
            try:
                compiled, logits_at, embedding_at = self._load(self.model_path)
            except RuntimeError as exc:  # an unreadable cache entry is rebuilt once
                if not is_cached(self.model_path):  # the user's own file: say why, never delete or rebuild it
                    raise BackendUnavailable(f"openvino cannot load {self.model_path}: {exc}") from None
                discard(self.model_path)
                self.model_path = self._locate(True)
                try:
                    compiled, logits_at, embedding_at = self._load(self.model_path)
                except RuntimeError as exc:
                    raise BackendUnavailable(f"openvino cannot load {self.model_path.stem}: {exc}") from None
            if embedding_at is not None and embedding_at >= len(compiled.outputs):
                embedding_at = None  # a graph that came without an embedding output
            self.logits_at, self.embedding_at = logits_at, embedding_at
            self.request = compiled.create_infer_request()
            return self.request

    def _infer(self, batch: np.ndarray, embedding: bool):
        return self._answer(self.request or self._float_request(), batch, embedding)

    def pixel_front(self) -> bool:
        return bool(self._pixel_request)  # compiled (or found impossible) at start

    def _infer_pixels(self, pixels: np.ndarray, embedding: bool):
        if not self._pixel_request:
            return self._infer(normalise(pixels, *self._normalisation), embedding)
        return self._answer(self._pixel_request, pixels, embedding)

    def _answer(self, request, batch: np.ndarray, embedding: bool):
        with self._lock:
            result = request.infer({0: batch})
            # copies: the request's output buffers are reused by the next call
            logits = np.array(result[self.logits_at], copy=True)
            return logits, np.array(result[self.embedding_at], copy=True) if embedding else None
