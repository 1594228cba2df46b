"""Graphs that take the cropped photo's uint8 pixels (N, H, W, 3) and normalise inside.

Cast, scale, shift and the HWC -> CHW transpose are then done by the runtime, in the same
pass that feeds the first convolution, instead of by numpy into a float copy four times the
size (``preprocess.to_chw``). The arithmetic is the same as ``to_chw``'s: ``x * (1 / std) +
(-mean / std)`` in float32, so the logits equal the float path's within float rounding.
In ONNX the scale and shift are one BatchNormalization (mean 0, variance 1, epsilon 0: exactly
``x * scale + shift``): ONNX Runtime runs a broadcast Mul and Add over NCHW slowly when they do
not feed a float convolution it can fuse them into — in the int8 graph they cost about 1.8 ms
per photo, more than the numpy they replace (measured at batches of 32, one thread).
Resizing and cropping stay in Pillow (draft decoding makes them cheap).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from .. import cache

PIXELS_NAME = "pixels"


def _scale_shift(mean, std) -> tuple[np.ndarray, np.ndarray]:
    # exactly the constants preprocess.to_chw uses
    scale = np.float32(1.0) / np.asarray(std, dtype=np.float32)
    shift = -np.asarray(mean, dtype=np.float32) * scale
    return scale, shift


def normalise(pixels: np.ndarray, mean, std) -> np.ndarray:
    """uint8 (N, H, W, 3) to the float32 (N, 3, H, W) batch, in numpy: for graphs without the front."""
    scale, shift = _scale_shift(mean, std)
    out = np.empty((len(pixels), 3) + pixels.shape[1:3], dtype=np.float32)
    np.multiply(pixels.transpose(0, 3, 1, 2), scale[:, None, None], out=out)
    out += shift[:, None, None]
    return out


def onnx_with_pixel_input(source: Path, target: Path, mean, std) -> None:
    """Write ``source`` with its float NCHW input replaced by uint8 NHWC ``pixels``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(source))
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    original = next(i for i in graph.input if i.name not in initializers)
    dims = original.type.tensor_type.shape.dim
    batch = dims[0].dim_param or dims[0].dim_value or "batch"
    height, width = (d.dim_value or d.dim_param for d in dims[2:4])
    pixels = helper.make_tensor_value_info(PIXELS_NAME, TensorProto.UINT8, [batch, height, width, 3])
    scale, shift = _scale_shift(mean, std)
    graph.initializer.extend([numpy_helper.from_array(scale, "pixels_scale"),
                              numpy_helper.from_array(shift, "pixels_shift"),
                              numpy_helper.from_array(np.zeros(3, np.float32), "pixels_zero_mean"),
                              numpy_helper.from_array(np.ones(3, np.float32), "pixels_unit_variance")])
    front = [
        # transpose the uint8 pixels (a quarter of the bytes of floats), then convert once
        helper.make_node("Transpose", [PIXELS_NAME], ["pixels_nchw"], perm=[0, 3, 1, 2], name="pixels_transpose"),
        helper.make_node("Cast", ["pixels_nchw"], ["pixels_float"], to=TensorProto.FLOAT, name="pixels_cast"),
        # x * scale + shift per channel, as one fast operator (see the module docstring)
        helper.make_node("BatchNormalization", ["pixels_float", "pixels_scale", "pixels_shift",
                                                "pixels_zero_mean", "pixels_unit_variance"],
                         [original.name], epsilon=0.0, name="pixels_normalise"),
    ]
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(front + nodes)
    inputs = [pixels] + [i for i in graph.input if i.name != original.name]
    del graph.input[:]
    graph.input.extend(inputs)
    onnx.save(model, str(target))


def _pixel_entry(source: Path, mean, std, *, kind: str, suffix: str) -> Path:
    """The cache entry of the uint8-input copy of the graph at ``source`` (keyed by that file as
    it is now: a rebuilt source gets a new copy); an entry that is not what its key says is rebuilt."""
    stat = source.stat()
    key = f"{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{tuple(mean)}|{tuple(std)}|v2"
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    return cache.entry_path(model=source.stem, fingerprint=digest, size=0, precision="uint8-in",
                            kind=kind, runtime_version="v2", suffix=suffix)


def cached_pixel_onnx(source: Path, mean, std) -> Path:
    """The uint8-input copy of the ONNX graph at ``source`` (a cache entry of its own), made once."""
    target = _pixel_entry(source, mean, std, kind="onnx-pixels", suffix=".onnx")
    if not target.exists():
        with cache.atomic_output(target) as tmp:
            onnx_with_pixel_input(source, tmp, mean, std)
    return target


def cached_pixel_openvino(source: Path, mean, std) -> Path:
    """The uint8-input OpenVINO IR of the graph at ``source`` (ONNX or IR), made once. Compiling
    a saved IR from its path lets OpenVINO load its cached blob: no ONNX parsing and no
    PrePostProcessor at start (measured: 155 ms instead of 520-690 ms for the float graph plus
    the uint8 one built at the first photo)."""
    import openvino as ov

    target = _pixel_entry(source, mean, std, kind="openvino-pixels", suffix=".xml")
    if not target.exists():
        model = openvino_with_pixel_input(ov.Core().read_model(str(source)), mean, std)
        with cache.ir_output(target) as xml:
            ov.save_model(model, str(xml), compress_to_fp16=False)
    return target


def openvino_with_pixel_input(model, mean, std):
    """The OpenVINO model with uint8 NHWC input, normalised by its PrePostProcessor."""
    import openvino as ov
    from openvino.preprocess import PrePostProcessor

    scale, shift = _scale_shift(mean, std)
    ppp = PrePostProcessor(model)
    ppp.input(0).tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
    ppp.input(0).model().set_layout(ov.Layout("NCHW"))
    # multiply-then-add as preprocess.to_chw does (a custom step: mean()/scale() would divide)
    ppp.input(0).preprocess().convert_layout(ov.Layout("NCHW")).convert_element_type(ov.Type.f32).custom(
        lambda node: ov.opset13.add(ov.opset13.multiply(node, ov.opset13.constant(scale.reshape(1, 3, 1, 1))),
                                    ov.opset13.constant(shift.reshape(1, 3, 1, 1))).output(0))
    return ppp.build()
