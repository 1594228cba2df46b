"""Our EfficientNet-Lite equals the reference implementation on the same real weights."""

import pytest
import torch

from shiwu.images import load_image
from shiwu.models.registry import get_model

from support.photos import PHOTOS


@pytest.mark.parametrize("name", ["efficientnet-lite0", "efficientnet-lite2"])
def test_logits_match_reference_package(name):
    from efficientnet_lite_pytorch import EfficientNet

    spec = get_model(name)
    ours = spec.build()
    reference = EfficientNet.from_pretrained(name, weights_path=str(spec.weights_path())).eval()
    images = [load_image(p) for p in PHOTOS[:6]]
    batch = torch.from_numpy(spec.preprocessing.batch(images))
    with torch.inference_mode():
        got, want = ours(batch), reference(batch)
    assert got.shape == (len(images), 1000)
    assert (got - want).abs().max().item() < 1e-4
    assert torch.equal(got.argmax(1), want.argmax(1))


@pytest.mark.parametrize("size", [168, 196, 225, 320])
def test_other_input_sizes_use_tensorflow_same_padding(size):
    """At any size, a stride-2 layer's output is ceil(size / 2), as TensorFlow's SAME gives."""
    model = get_model().build(size)
    x = torch.zeros(1, 3, size, size)
    with torch.inference_mode():
        stem = model._conv_stem(x)
        logits = model(x)
    assert stem.shape[-1] == -(-size // 2)
    assert logits.shape == (1, 1000) and torch.isfinite(logits).all()


def test_weights_load_with_weights_only(monkeypatch):
    """Checkpoints are data: loading must pass weights_only=True and map to the CPU."""
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    get_model().build()
    assert calls and all(c.get("weights_only") is True and c.get("map_location") == "cpu" for c in calls)
