"""ONNX Runtime int8 for ResNeSt (the 万物识别 model's network). The reference's split attention
reshapes by a shape computed from the batch size, which ONNX Runtime's symbolic shape inference
cannot follow (AssertionError in quant_pre_process): the quantizer falls back to ONNX's own.
shiwu's ResNeSt sums the splits as slices, which it follows, and which stay int8."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from shiwu.backends import quantize_onnx
from shiwu.models.resnest import ResNeSt, ResNeStConfig

SIZE = 32


@pytest.fixture(scope="module")
def tiny_resnest_onnx(tmp_path_factory):
    torch.manual_seed(0)
    network = ResNeSt(ResNeStConfig(layers=(1, 1, 1, 1), bottleneck_width=16, stem_width=8,
                                    num_classes=7)).eval()
    path = tmp_path_factory.mktemp("resnest") / "tiny_resnest.onnx"
    torch.onnx.export(network, torch.randn(1, 3, SIZE, SIZE), str(path), input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                      dynamo=False)
    return path


class _BatchReshape(torch.nn.Module):
    """The split attention as ResNeSt's reference writes it: a view whose shape is computed from
    the batch size and a sum over the radix splits (the user's own ResNeSt exports like this)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.fc = torch.nn.Linear(4, 5)

    def forward(self, x):
        x = self.conv(x)
        gap = x.unflatten(1, (2, 4)).sum(1).mean((2, 3))
        return torch.softmax(self.fc(gap).view(x.shape[0], 1, 5, -1), 2).flatten(1)


def test_a_graph_symbolic_shape_inference_cannot_follow_still_quantizes(tmp_path):
    # the reason for the fallback: if ONNX Runtime learns to follow it, the fallback can go
    from onnxruntime.quantization.shape_inference import quant_pre_process

    path = tmp_path / "batch_reshape.onnx"
    torch.manual_seed(0)
    torch.onnx.export(_BatchReshape().eval(), torch.randn(1, 3, 16, 16), str(path), input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                      dynamo=False)
    with pytest.raises(AssertionError):
        quant_pre_process(str(path), str(tmp_path / "prepared.onnx"))
    calib = np.random.default_rng(0).standard_normal((4, 3, 16, 16)).astype(np.float32)
    made = quantize_onnx.quantize_onnx(path, tmp_path / "int8.onnx", calib)
    assert made["quantized_layers"] >= 1  # the convolution


def test_split_attention_sums_export_without_a_reduce_sum(tiny_resnest_onnx):
    # a ReduceSum over the radix splits runs in float between a dequantize and a quantize in the
    # int8 graph (13% of the int8 ResNeSt-101's time); Slice + Add stays int8
    import onnx

    ops = {node.op_type for node in onnx.load(str(tiny_resnest_onnx)).graph.node}
    assert "ReduceSum" not in ops and "SplitToSequence" not in ops
    assert {"Slice", "Add", "Softmax"} <= ops


def test_a_new_graph_revision_is_exported_again_under_the_same_fingerprint(tmp_path, monkeypatch):
    # the fingerprint (which indexes compare) stays; the export cache entry does not
    import dataclasses

    from shiwu.backends.export import onnx_entry
    from shiwu.models import modelscope
    from shiwu.models.synthetic import write_synthetic_model

    monkeypatch.setenv("SHIWU_CACHE", str(tmp_path / "cache"))
    spec = modelscope.spec_for_directory(write_synthetic_model(tmp_path / "model", num_classes=5))
    assert spec.graph_revision == modelscope.GRAPH_REVISION
    older = dataclasses.replace(spec, graph_revision="")
    assert older.fingerprint() == spec.fingerprint()
    assert onnx_entry(older, 224) != onnx_entry(spec, 224)


@pytest.mark.slow
def test_resnest_quantizes_to_int8_with_the_classifier_in_float(tiny_resnest_onnx, tmp_path):
    rng = np.random.default_rng(0)
    calib = rng.standard_normal((8, 3, SIZE, SIZE)).astype(np.float32)
    made = quantize_onnx.quantize_onnx(tiny_resnest_onnx, tmp_path / "int8.onnx", calib)
    assert made["quantized_layers"] > 0
    assert list(made["float_layers"]) == list(quantize_onnx.classifier_layers(tiny_resnest_onnx))
    assert len(made["float_layers"]) == 1  # the classifier (fc) found and kept in float

    def logits(path, batch):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {"input": batch})[0]

    batch = calib[:4]
    reference, quantized = logits(tiny_resnest_onnx, batch), logits(tmp_path / "int8.onnx", batch)
    assert quantized.shape == reference.shape == (4, 7)
    # int8 computes nearly the same thing (a broken graph would not)
    assert np.corrcoef(reference.ravel(), quantized.ravel())[0, 1] > 0.9


class _Attention(torch.nn.Module):
    """One self-attention block and a classifier: the shape of a ViT in miniature."""

    def __init__(self):
        super().__init__()
        self.qkv, self.head = torch.nn.Linear(8, 24), torch.nn.Linear(8, 3)

    def forward(self, x):  # (N, tokens, 8)
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        attended = torch.softmax(q @ k.transpose(1, 2), dim=-1) @ v
        return self.head(attended.mean(1))


def test_only_attention_makes_openvino_int8_quantize_as_a_transformer(tiny_resnest_onnx, tmp_path):
    # ResNeSt has a Softmax (split attention) and a MatMul (its classifier, constant weights): it is
    # quantized as a convolutional network, not with NNCF's transformer scheme and SmoothQuant
    import openvino as ov

    from shiwu.backends.quantize import _is_transformer

    core = ov.Core()
    assert not _is_transformer(core.read_model(str(tiny_resnest_onnx)))
    attention = tmp_path / "attention.onnx"
    torch.onnx.export(_Attention().eval(), torch.randn(1, 4, 8), str(attention), dynamo=False)
    assert _is_transformer(core.read_model(str(attention)))
