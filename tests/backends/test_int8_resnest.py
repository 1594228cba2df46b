"""ONNX Runtime int8 for ResNeSt (the 万物识别 model's network): its split attention reshapes by
a shape computed from the batch size, which ONNX Runtime's symbolic shape inference cannot
follow (AssertionError in quant_pre_process); the quantizer falls back to ONNX's own."""

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


def test_ort_symbolic_shape_inference_fails_on_split_attention(tiny_resnest_onnx, tmp_path):
    # the reason for the fallback: if ONNX Runtime learns to follow it, the fallback can go
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with pytest.raises(AssertionError):
        quant_pre_process(str(tiny_resnest_onnx), str(tmp_path / "prepared.onnx"))


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
