"""Tiny classifiers written with the onnx package (no torch, milliseconds): a pooled RGB image
times a weight matrix. Different weights are different models with the same file shape, which
is what the cache-identity and model-file tests need."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper, save


def onnx_classifier(path: Path, weights: np.ndarray, *, size: int = 32, declared_classes: int | None = None,
                    external: str | None = None) -> Path:
    """An ONNX model: GlobalAveragePool → Flatten → MatMul(weights (3, C)) → logits (N, C).
    ``declared_classes``: the output shape the graph claims (may differ from the weights');
    ``external``: keep the weights in that file beside the model (ONNX external data)."""
    from onnx.external_data_helper import convert_model_to_external_data

    classes = declared_classes or weights.shape[1]
    nodes = [helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["flat"]),
             helper.make_node("MatMul", ["flat", "W"], ["logits"])]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
        [numpy_helper.from_array(weights.astype(np.float32), "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if external:
        convert_model_to_external_data(model, all_tensors_to_one_file=True, location=external, size_threshold=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    save(model, str(path))
    return path


def red_and_blue(path: Path, *, red_first: bool) -> Path:
    """Two classes, 红 and 蓝: which one a red photo gets depends on the weights."""
    weights = np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    if not red_first:
        weights = weights[:, ::-1].copy()
    onnx_classifier(path, weights)
    (path.parent / "labels.txt").write_text("红\n蓝\n", encoding="utf-8")
    return path
