"""Give a graph the outputs shiwu reads: the logits first, then the embedding.

For graphs shiwu did not trace with its own (logits, embedding) wrapper — the user's ONNX or
OpenVINO IR file, a TorchScript file exported as it is — the embedding is found in the graph:
the input of the matrix product that produces the logits (``Gemm``, or ``MatMul`` followed by
the bias ``Add``), i.e. what the classifier's last linear layer reads. No torch here.
"""

from __future__ import annotations

from pathlib import Path

LOGITS, EMBEDDING = "logits", "embedding"
PASS_THROUGH = ("Identity", "Flatten", "Reshape", "Squeeze", "Cast")


def _embedding_tensor(graph, logits_name: str) -> str | None:
    producers = {out: node for node in graph.node for out in node.output}
    initializers = {i.name for i in graph.initializer}
    node = producers.get(logits_name)
    while node is not None and node.op_type in PASS_THROUGH:
        node = producers.get(node.input[0])
    if node is not None and node.op_type == "Add":  # MatMul + bias
        inner = [producers.get(i) for i in node.input if i not in initializers]
        node = next((n for n in inner if n is not None and n.op_type == "MatMul"), None)
    if node is None or node.op_type not in ("Gemm", "MatMul"):
        return None
    data = [i for i in node.input[:2] if i not in initializers and not _is_constant(producers.get(i), initializers)]
    return data[0] if len(data) == 1 else None


def _is_constant(node, initializers: set[str] = frozenset()) -> bool:
    """A Constant, or a node computed from weights only (e.g. the Transpose of a weight)."""
    return node is not None and (node.op_type == "Constant" or
                                 (len(node.input) > 0 and all(i in initializers for i in node.input)))


def onnx_with_outputs(source: Path, target: Path, logits_index: int | None) -> bool:
    """Write ``source`` to ``target`` with exactly the outputs (logits, embedding) — or just
    the logits when no classifier product is found. Returns whether there is an embedding."""
    import onnx

    model = onnx.load(str(source))  # external data, if any, is read and written back inline
    graph = model.graph
    logits = graph.output[logits_index or 0]
    embedding = _embedding_tensor(graph, logits.name)
    del graph.output[:]
    graph.output.append(logits)
    if embedding is not None:
        graph.output.append(onnx.helper.make_empty_tensor_value_info(embedding))
    onnx.save(model, str(target))
    return embedding is not None


def openvino_embedding_port(model, logits_index: int | None):
    """The output port of the embedding in an OpenVINO model (the input of the MatMul that
    gives the logits), or None."""
    result = model.outputs[logits_index or 0]
    node = result.get_node()
    while node is not None:
        kind = node.get_type_name()
        if kind in ("Result", "Convert", "Reshape", "Squeeze"):
            node = node.input_value(0).get_node()
        elif kind == "Add":
            node = next((v.get_node() for v in node.input_values()
                         if v.get_node().get_type_name() == "MatMul"), None)
        elif kind == "MatMul":
            data = [v for v in node.input_values() if v.get_node().get_type_name() not in ("Constant", "Convert")]
            return data[0] if len(data) == 1 else None
        else:
            return None
    return None
