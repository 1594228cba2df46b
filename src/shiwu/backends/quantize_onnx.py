"""ONNX Runtime static int8 (QDQ): per-channel int8 weights, uint8 activations calibrated by
their min/max over every calibration view, collected a few views at a time to bound memory,
the classifier kept in float where it is small.

Measured on imagenet-dev (500 labelled photos, benchmarks/int8_accuracy.py) for
EfficientNet-Lite0, fp32 88.0% top-1: Percentile on 32 views (the previous setting) 87.2%,
MinMax on 128 views 87.4%, Entropy on 64 views 87.4-87.6%, on 128 views 87.2% (2-4 photos
apart: calibration details, not a trend). Keeping layers in float was measured too and never
helped, but for the classifier alone: the stem, head and classifier 87.4% (MinMax) / 87.0% (Entropy), all 16 depthwise
convolutions 82.8%: ONNX Runtime then runs the float layer between a dequantize and a quantize
whose ranges were calibrated for the fused int8 pair. The classifier alone in float did help
(MinMax, 128 views: 87.4% -> 87.6%, within 0.5 point of fp32), so it stays in float by
default; ``float_layers`` names others for a model where that helps.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

# What ONNX Runtime's calibration may hold of activations at once. Its calibrators keep every
# intermediate tensor of the views they are given until they summarise them: measured here
# 62 MB a view for Lite0 at 224, 176 MB for ViT-B/16 (22.6 GB for 128 views, killed for lack of
# memory). Views are therefore fed in strides that fit (ORT's CalibStridedMinMax: each stride is
# summarised into the running ranges / histograms and dropped), and every view is used.
CALIBRATION_MEMORY = 2 << 30
MIN_STRIDE = 1
# MinMax: as accurate as Entropy here (above), 3-5x quicker to build, and exact when the views
# come in strides (ranges merge; Entropy's histograms are re-binned at each stride).
METHOD = "MinMax"
# The largest classifier kept in float: a few MB stay in the CPU's caches between photos; beyond,
# every photo reads the float weights from memory (classifier_layers).
FLOAT_CLASSIFIER_BYTES = 32 << 20


def activation_bytes(model_path: Path) -> int:
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


def stride_within_memory(prepared: Path, views: int) -> int:
    """Views per calibration stride: as many as fit in CALIBRATION_MEMORY, dividing ``views``
    (ONNX Runtime wants equal strides)."""
    fits = max(MIN_STRIDE, CALIBRATION_MEMORY // max(activation_bytes(prepared), 1))
    return max(d for d in range(1, min(fits, views) + 1) if views % d == 0)


def _reader(input_name: str, calib: np.ndarray):
    from onnxruntime.quantization import CalibrationDataReader

    class StridedReader(CalibrationDataReader):
        """One view at a time, from the stride ONNX Runtime asks for."""

        def __init__(self):
            self.set_range(0, len(calib))

        def __len__(self):
            return len(calib)

        def set_range(self, start_index: int, end_index: int):
            self.items = iter(range(start_index, end_index))

        def get_next(self):
            i = next(self.items, None)
            return None if i is None else {input_name: calib[i:i + 1]}

    return StridedReader()


def classifier_layers(model_path: Path) -> dict[str, str]:
    """The layer that computes the logits (graph output 0), when it is a Gemm or MatMul whose
    float weights are small: kept in float. Lite0's (1280 x 1000, 5 MB) is a small share of the
    work (1.3 of 400 MFLOP) and the last rounding before the answer: on imagenet-dev int8 gained
    0.2 point with it in float (87.4% -> 87.6%, MinMax, 128 views). A large one is quantized:
    the 万物识别 ResNeSt's 2048 x 54,092 classifier is 443 MB of float weights read for every
    photo, and int8 weights took its int8 model from 49 to 39 ms a photo (batch 1, 2 threads)."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    producer = {out: node for node in graph.node for out in node.output}
    node = producer.get(graph.output[0].name)
    if node is not None and node.op_type == "Add":  # MatMul + bias
        node = next((producer[i] for i in node.input if i in producer and producer[i].op_type == "MatMul"), node)
    if node is None or node.op_type not in ("Gemm", "MatMul") or not node.name:
        return {}
    weights = next((i for i in graph.initializer if i.name in node.input[1:2]), None)
    if weights is not None and 4 * int(np.prod(weights.dims)) > FLOAT_CLASSIFIER_BYTES:
        return {}
    return {node.name: "the classifier: the last rounding before the answer, a small share of the work"}


def quantize_onnx(fp32_path: Path, out: Path, calib: np.ndarray, float_layers: dict[str, str] | None = None,
                  *, reduce_range: bool = False) -> dict:
    """Write the int8 QDQ model of ``fp32_path`` to ``out``; returns how it was made.
    ``float_layers`` (node name -> why) stay in float; by default the classifier.
    ``reduce_range``: 7-bit weights, whose 16-bit sums never clip on CPUs without VNNI; it cost
    Lite0 0.6 point on imagenet-dev (benchmarks/int8_kernels.py), so shiwu runs 8-bit weights
    unfused there instead (backends/onnxruntime.py) and keeps this for that comparison."""
    import tempfile

    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    input_name = ort.InferenceSession(str(fp32_path), providers=["CPUExecutionProvider"]).get_inputs()[0].name
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        try:
            quant_pre_process(str(fp32_path), str(prepared))
        except AssertionError:
            # ORT's symbolic shape inference cannot follow a Reshape whose shape is computed
            # from the batch size (ResNeSt's split attention): ONNX's own shape inference can
            log.debug("symbolic shape inference failed on %s: using ONNX's", fp32_path.name)
            quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        if float_layers is None:
            float_layers = classifier_layers(prepared)
        stride = stride_within_memory(prepared, len(calib))
        if stride < len(calib):
            log.info("calibrating %d views at a time (each holds %.0f MiB of activations)", stride,
                     activation_bytes(prepared) / 2**20)
        quantize_static(str(prepared), str(out), _reader(input_name, calib), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=getattr(CalibrationMethod, METHOD), nodes_to_exclude=list(float_layers),
                        reduce_range=reduce_range,
                        extra_options={"CalibStridedMinMax": stride})
    quantized = onnx.load(str(out), load_external_data=False)
    layers = sum(n.op_type in ("Conv", "Gemm", "MatMul") for n in quantized.graph.node)
    return {"calibration": {"views": int(len(calib)), "method": METHOD, "views_at_once": stride},
            "weights": f"int{7 if reduce_range else 8}, symmetric, per output channel",
            "activations": "uint8, per tensor",
            "quantized_layers": layers - len(float_layers),
            "float_layers": dict(float_layers)}
