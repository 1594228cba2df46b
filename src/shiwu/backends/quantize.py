"""int8 models, made once: calibrated on real photos, weights per output channel, and a record
of how each was made.

Post-training quantization is calibrated on views of real photos (shiwu's bundled ones, or a
folder the user gives). Whether a quantized model may then be *used* is not decided here but by
the accuracy policy (``backends.policy``: top-1 on labelled photos, or the label-free estimate),
whose verdict holds the agreement with fp32. This module returns a ``QuantizedModel``: its path,
the fp32 model it came from and ``record`` (calibration set, views, method, the layers kept in
float and why). The model and its record are cached under a key
that covers the model, size, calibration set, runtime versions and ``SETTINGS``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .. import cache, fsutil
from . import BackendUnavailable, export
from .quantize_onnx import quantize_onnx
from .runtimes import INT8_RECIPES, SMOOTH_QUANT_ALPHA

log = logging.getLogger(__name__)

CALIBRATION_IMAGES = 128
# Everything that changes the file besides model, size, calibration set and runtime versions
# (kept in the runtime table, where the accuracy policy's verdict key reads it too)
SETTINGS = INT8_RECIPES


@dataclass(frozen=True)
class QuantizedModel:
    """An int8 model in the cache: ``path`` (.onnx, or .xml with its .bin beside it), the runtime
    that reads it, the fp32 model it was quantized from, and how it was made."""

    path: Path
    runtime: str  # "onnxruntime" or "openvino"
    reference: Path
    record: dict = field(default_factory=dict)

    def logits_of(self, precision: str, spec) -> Callable[[np.ndarray], np.ndarray]:
        """batch -> logits of this int8 model ("int8") or of its fp32 source ("fp32"), in fp32
        arithmetic, fed in chunks of 16 (or one at a time for a fixed-batch graph)."""
        path = self.path if precision == "int8" else self.reference
        if self.runtime == "openvino":
            import openvino as ov

            core = ov.Core()
            compiled = core.compile_model(core.read_model(str(path)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
            at = (spec.output_index or 0) if spec.openvino_file is not None else 0  # see openvino.py
            run = lambda batch: compiled(batch)[at]  # noqa: E731
        else:
            import onnxruntime as ort

            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            name = session.get_inputs()[0].name  # a user's own graph names its input as it likes
            run = lambda batch: session.run(None, {name: batch})[0]  # noqa: E731 - logits first
        return lambda batch: _run_in_chunks(spec, run, batch)


def _run_in_chunks(spec, run, batch: np.ndarray, chunk: int = 16) -> np.ndarray:
    from . import run_in_fixed_batches

    return np.concatenate([run_in_fixed_batches(run, batch[i:i + chunk], spec.fixed_batch)
                           for i in range(0, len(batch), chunk)])


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        raise BackendUnavailable(f"int8 needs {dist}: pip install 'shiwu[int8]'") from None


def record_path(model_path: Path) -> Path:
    return model_path.with_suffix(".build.json")


def _entry(spec, size: int, calibration, *, runtime: str, version: str, suffix: str) -> tuple[Path, str]:
    from ..calibrate import calibration_id

    calib_id = calibration_id(calibration, CALIBRATION_IMAGES)
    recipe = SETTINGS[runtime] + ("|" + "|".join(spec.int8_float_layers) if runtime == "openvino" else "")
    settings = hashlib.sha256(recipe.encode()).hexdigest()[:8]
    kind = {"onnxruntime": "onnx-int8", "openvino": "openvino-int8"}[runtime]
    path = cache.entry_path(model=spec.name, fingerprint=spec.fingerprint(),
                            size=size, precision="int8", kind=kind,
                            runtime_version=f"{version}-{calib_id}-{export.graph_key(spec)}-{settings}",
                            suffix=suffix)
    return path, calib_id


def _cached(path: Path, runtime: str, reference: Path, rebuild: bool) -> QuantizedModel | None:
    if rebuild:
        for stale in (path, path.with_suffix(".bin"), record_path(path)):
            cache.discard(stale)
        return None
    record = cache.read_json(record_path(path))
    return QuantizedModel(path, runtime, reference, record) if path.exists() and record else None


def _calibration(spec, size: int, calibration) -> np.ndarray:
    from ..calibrate import calibration_batch

    return calibration_batch(spec.preprocessing.with_size(size), calibration, CALIBRATION_IMAGES)


def _write_record(model: QuantizedModel) -> QuantizedModel:
    fsutil.atomic_write(record_path(model.path), json.dumps(model.record, indent=2, ensure_ascii=False))
    kept = model.record.get("float_layers", {})
    log.info("int8 %s model ready: %d layers quantized, %d kept in float", model.runtime,
             model.record.get("quantized_layers", 0), len(kept))
    return model


def onnx_int8(spec, size: int, *, calibration=None, rebuild: bool = False) -> QuantizedModel:
    """An ONNX Runtime static-quantized (QDQ) model of ``spec`` at ``size``, built once."""
    _version("onnx")  # the quantizer's own dependency
    reference = export.cached_onnx(spec, size)
    path, calib_id = _entry(spec, size, calibration, runtime="onnxruntime", suffix=".onnx",
                            version=f"ort-{_version('onnxruntime')}")
    if (model := _cached(path, "onnxruntime", reference, rebuild)) is not None:
        return model
    calib = _calibration(spec, size, calibration)
    log.info("quantizing %s to int8 for ONNX Runtime on %d calibration views (once)", spec.name, len(calib))
    with cache.atomic_output(path) as out:  # the entry's record is written before the rename
        made = quantize_onnx(reference, out, calib)
    record = {"runtime": f"onnxruntime {_version('onnxruntime')}", "settings": SETTINGS["onnxruntime"],
              "calibration": {"set": calib_id, **made.pop("calibration")}, **made}
    return _write_record(QuantizedModel(path, "onnxruntime", reference, record))


def _is_transformer(model) -> bool:
    """Attention found in the graph: a Softmax and a MatMul of two activations (Q·Kᵀ, weights·V).
    A MatMul with constant weights is a linear layer: ResNeSt has one (its classifier) and a
    Softmax (its split attention) and is still a convolutional network, quantized as one."""
    def computed(value) -> bool:
        node = value.get_node()
        while node.get_type_name() == "Convert":  # fp16-compressed weights are decompressed
            node = node.input_value(0).get_node()
        return node.get_type_name() != "Constant"

    ops = list(model.get_ops())
    return (any(op.get_type_name() == "Softmax" for op in ops)
            and any(op.get_type_name() == "MatMul" and all(computed(v) for v in op.input_values())
                    for op in ops))


@contextlib.contextmanager
def _nncf_off_stdout():
    """NNCF logs to stdout and draws its progress bars there, where `--json` answers go (its INFO
    lines on ignored layers came before a first run's JSON): while it quantizes, its log goes to
    stderr from WARNING up (shiwu says what it is doing) and its progress bars to stderr."""
    from nncf.common.logging import nncf_logger

    streams = [(h, h.setStream(sys.stderr)) for h in nncf_logger.handlers if isinstance(h, logging.StreamHandler)]
    level = nncf_logger.level
    nncf_logger.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(sys.stderr):  # rich's consoles write to sys.stdout as it is then
            yield
    finally:
        nncf_logger.setLevel(level)
        for handler, stream in streams:
            handler.setStream(stream)


def openvino_int8(spec, size: int, *, calibration=None, rebuild: bool = False) -> QuantizedModel:
    """An NNCF-quantized OpenVINO IR (.xml + .bin) of ``spec`` at ``size``, built once."""
    reference = export.openvino_source(spec, size)
    path, calib_id = _entry(spec, size, calibration, runtime="openvino", suffix=".xml",
                            version=f"ov-{_version('openvino')}-nncf-{_version('nncf')}")
    if (model := _cached(path, "openvino", reference, rebuild)) is not None:
        return model

    import nncf
    import openvino as ov
    from nncf.quantization.advanced_parameters import (AdvancedQuantizationParameters,
                                                       AdvancedSmoothQuantParameters)

    calib = _calibration(spec, size, calibration)
    log.info("quantizing %s to int8 with NNCF on %d calibration views (once)", spec.name, len(calib))
    fp32_model = ov.Core().read_model(str(reference))
    transformer = _is_transformer(fp32_model)
    options = {}
    if spec.int8_float_layers:  # every pattern must match (NNCF validates): a renamed graph fails here
        options["ignored_scope"] = nncf.IgnoredScope(patterns=list(spec.int8_float_layers))
    if transformer:
        options |= {"model_type": nncf.ModelType.TRANSFORMER, "advanced_parameters": AdvancedQuantizationParameters(
            smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=SMOOTH_QUANT_ALPHA))}
    with _nncf_off_stdout():
        quantized = nncf.quantize(fp32_model, nncf.Dataset([calib[i:i + 1] for i in range(len(calib))]),
                                  subset_size=len(calib), **options)
    with cache.ir_output(path) as xml:
        ov.save_model(quantized, str(xml), compress_to_fp16=False)
    record = {"runtime": f"openvino {_version('openvino')}, nncf {_version('nncf')}",
              "settings": SETTINGS["openvino"],
              "calibration": {"set": calib_id, "views": int(len(calib)), "method": "NNCF MinMax + bias correction"},
              "weights": "int8, per output channel", "activations": "int8/uint8, per tensor",
              "smooth_quant_alpha": SMOOTH_QUANT_ALPHA if transformer else None,
              "quantized_layers": sum(op.get_type_name() == "FakeQuantize" for op in quantized.get_ops()),
              "float_layers": {pattern: "int8 costs top-1 here (NNCF accuracy control on labelled photos)"
                               for pattern in spec.int8_float_layers}}
    return _write_record(QuantizedModel(path, "openvino", reference, record))


def cached_onnx_int8(spec, size: int, *, calibration=None, rebuild: bool = False) -> Path:
    """The ONNX Runtime int8 model's path. Whether it may be used is the accuracy policy's
    decision (backends.policy, in create_backend), whose verdict holds its agreement with fp32."""
    return onnx_int8(spec, size, calibration=calibration, rebuild=rebuild).path


def cached_openvino_int8(spec, size: int, *, calibration=None, rebuild: bool = False) -> Path:
    """The OpenVINO int8 IR's path (the accuracy policy decides whether it is used)."""
    return openvino_int8(spec, size, calibration=calibration, rebuild=rebuild).path
