"""int8 that is worth having: calibrate, quantize, then prove agreement with fp32 — or refuse.

Post-training quantization is calibrated on real photos (shiwu's bundled ones, or a folder the
user gives). The quantized model is then checked against fp32 on *other* views of the
photos; if its top-1 agrees on fewer than ``AGREEMENT_FLOOR`` of them, int8 is not offered for
that model and the error says what was measured. The verdict is cached with the model, so the
check runs once per model, size, calibration set and runtime version.
"""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from .. import cache
from . import BackendUnavailable, export

AGREEMENT_FLOOR = 0.99
CALIBRATION_IMAGES = 128
CHECK_VIEWS_PER_PHOTO = 12


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        raise BackendUnavailable(f"int8 needs {dist}: pip install 'shiwu[int8]'") from None


def _check_batch(spec, size: int) -> np.ndarray:
    from ..calibrate import bundled_photos, view_batch

    # seed differs from calibration's, so these views are not the ones the quantizer saw
    return view_batch(bundled_photos(), spec.preprocessing.with_size(size), CHECK_VIEWS_PER_PHOTO, seed=99)


def _verdict(path: Path) -> dict:
    return cache.read_json(path.with_suffix(".verdict.json"))


def _enforce(spec, precision_name: str, verdict: dict) -> None:
    """Nothing is refused here any more: whether an int8 model is acceptable is decided by the
    accuracy policy (backends.policy.require / verdict), which every reduced precision goes
    through in create_backend. This module builds the model; the policy judges it."""
    return None


def _record(path: Path, reference: np.ndarray, quantized: np.ndarray, calibration_id: str) -> dict:
    from ..calibrate import top1_agreement

    verdict = {"agreement": top1_agreement(reference, quantized), "views": int(len(reference)),
               "calibration": calibration_id, "floor": AGREEMENT_FLOOR}
    cache.atomic_write_text(path.with_suffix(".verdict.json"), json.dumps(verdict, indent=2))
    print(f"shiwu: int8 top-1 agreement with fp32: {verdict['agreement']:.1%} on {verdict['views']} "
          "photo views", file=sys.stderr)
    return verdict


def _int8_entry(spec, size: int, calibration, *, kind: str, runtime: str, suffix: str) -> tuple[Path, str]:
    from ..calibrate import calibration_id

    calib_id = calibration_id(calibration, CALIBRATION_IMAGES)
    path = cache.entry_path(model=spec.name, fingerprint=spec.fingerprint(),
                            size=size, precision="int8", kind=kind,
                            runtime_version=f"{runtime}-{calib_id}-{export.GRAPH_OUTPUTS}", suffix=suffix)
    return path, calib_id


def _calibration(spec, size: int, calibration) -> np.ndarray:
    from ..calibrate import calibration_batch

    return calibration_batch(spec.preprocessing.with_size(size), calibration, CALIBRATION_IMAGES)


def _run_in_chunks(spec, run, batch: np.ndarray, chunk: int = 16) -> np.ndarray:
    from . import run_in_fixed_batches

    return np.concatenate([run_in_fixed_batches(run, batch[i:i + chunk], spec.fixed_batch)
                           for i in range(0, len(batch), chunk)])


def cached_openvino_int8(spec, size: int, *, calibration=None, rebuild: bool = False) -> Path:
    """An NNCF-quantized OpenVINO IR (.xml + .bin), built once and checked against fp32."""
    path, calib_id = _int8_entry(spec, size, calibration, kind="openvino-int8", suffix=".xml",
                                 runtime=f"ov-{_version('openvino')}-nncf-{_version('nncf')}")
    if rebuild:
        cache.discard(path)
        cache.discard(path.with_suffix(".bin"))
    if path.exists() and _verdict(path):
        _enforce(spec, "OpenVINO", _verdict(path))
        return path

    import nncf
    import openvino as ov

    calib = _calibration(spec, size, calibration)
    print(f"shiwu: quantizing {spec.name} to int8 with NNCF on {len(calib)} calibration views (once)",
          file=sys.stderr)
    core = ov.Core()
    fp32_model = core.read_model(str(export.openvino_source(spec, size)))
    quantized = nncf.quantize(fp32_model, nncf.Dataset([calib[i:i + 1] for i in range(len(calib))]),
                              subset_size=len(calib))
    # IR is two files: write both into a private folder, move the .bin first, the .xml last,
    # so an .xml in the cache always has its weights beside it.
    with tempfile.TemporaryDirectory(dir=path.parent if path.parent.exists() else None) as tmp:
        ov.save_model(quantized, str(Path(tmp) / "model.xml"), compress_to_fp16=False)
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(Path(tmp) / "model.bin"), path.with_suffix(".bin"))
        cache.seal(path, written=[Path(tmp) / "model.xml", path.with_suffix(".bin")])  # its record first
        shutil.move(str(Path(tmp) / "model.xml"), path)

    check = _check_batch(spec, size)
    config = {"INFERENCE_PRECISION_HINT": "f32"}
    reference = core.compile_model(fp32_model, "CPU", config)
    int8 = core.compile_model(core.read_model(str(path)), "CPU", config)
    logits_at = (spec.output_index or 0) if spec.openvino_file is not None else 0  # see openvino.py
    verdict = _record(path, _run_in_chunks(spec, lambda b: reference(b)[logits_at], check),
                      _run_in_chunks(spec, lambda b: int8(b)[logits_at], check), calib_id)
    _enforce(spec, "OpenVINO", verdict)
    return path


# What ONNX Runtime's calibration may hold of activations at once. Its Percentile (histogram)
# calibrator keeps every intermediate tensor of every calibration view until the end: measured
# here 62 MB a view for Lite0 at 224 (8 GB for 128 views), 176 MB for ViT-B/16 (22.6 GB, killed
# for lack of memory). Its MinMax option that merges every N views (CalibMaxIntermediateOutputs)
# drops the views instead of merging them in onnxruntime 1.32, so fewer views it is.
CALIBRATION_MEMORY = 2 << 30
MIN_CALIBRATION_VIEWS = 8


def _activation_bytes(model_path: Path) -> int:
    """Bytes of float activations one image produces, from the shapes that ONNX Runtime's
    pre-processing (symbolic shape inference) wrote into the graph; unknown dims count as 1."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    total = 0
    for info in model.graph.value_info:
        tensor = info.type.tensor_type
        if tensor.elem_type != onnx.TensorProto.FLOAT:
            continue
        count = 1
        for dim in tensor.shape.dim:
            count *= dim.dim_value if dim.HasField("dim_value") and dim.dim_value > 0 else 1
        total += 4 * count
    return total


def _ort_calibration_views(prepared: Path, views: int) -> int:
    """How many of ``views`` calibration views ONNX Runtime may see within CALIBRATION_MEMORY
    (at least MIN_CALIBRATION_VIEWS; the agreement gate judges the result either way)."""
    per_view = _activation_bytes(prepared)
    fits = max(MIN_CALIBRATION_VIEWS, CALIBRATION_MEMORY // max(per_view, 1))
    if fits >= views:
        return views
    print(f"shiwu: calibrating on {fits} of the {views} views: each holds {per_view / 2**20:.0f} MiB of "
          f"activations in ONNX Runtime's calibration", file=sys.stderr)
    return fits


def cached_onnx_int8(spec, size: int, *, calibration=None, rebuild: bool = False) -> Path:
    """An ONNX Runtime static-quantized (QDQ, per-channel) model, built once and checked."""
    _version("onnx")  # the quantizer's own dependency
    path, calib_id = _int8_entry(spec, size, calibration, kind="onnx-int8", suffix=".onnx",
                                 runtime=f"ort-{_version('onnxruntime')}")
    if rebuild:
        cache.discard(path)
    if path.exists() and _verdict(path):
        _enforce(spec, "ONNX Runtime", _verdict(path))
        return path

    import onnxruntime as ort
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{input_name: calib[i:i + 1]} for i in range(len(calib))])

        def get_next(self):
            return next(self.items, None)

    calib = _calibration(spec, size, calibration)
    print(f"shiwu: quantizing {spec.name} to int8 for ONNX Runtime on {len(calib)} calibration views (once)",
          file=sys.stderr)
    fp32_path = export.cached_onnx(spec, size)
    providers = ["CPUExecutionProvider"]
    reference = ort.InferenceSession(str(fp32_path), providers=providers)
    input_name = reference.get_inputs()[0].name  # a user's own graph names its input as it likes
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared))
        calib = calib[:_ort_calibration_views(prepared, len(calib))]
        with cache.atomic_output(path) as out:
            # Percentile calibration: of MinMax, Entropy and Percentile it kept the most top-1
            # agreement on EfficientNet-Lite0 (73%, 86%, 87%).
            quantize_static(str(prepared), str(out), Reader(), quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.Percentile)

    check = _check_batch(spec, size)
    int8 = ort.InferenceSession(str(path), providers=providers)
    verdict = _record(  # shiwu's graphs have the logits first
        path, _run_in_chunks(spec, lambda b: reference.run(None, {input_name: b})[0], check),
        _run_in_chunks(spec, lambda b: int8.run(None, {input_name: b})[0], check), calib_id)
    _enforce(spec, "ONNX Runtime", verdict)
    return path
