"""shiwu's Chinese-CLIP is the reference Chinese-CLIP: same parameter names, same embeddings, same
logits (max |Δ| < 1e-4), against both references on the same random weights.

References: ModelScope's official ``CLIPForMultiModalEmbedding`` loading the synthetic model
directory itself, and the ``cn-clip`` package's ``CLIP`` (``create_model``, its own loading path,
for the real-size model). Towers: ViT-B/16, ViT-L/14@336 (patch 14, 577 tokens) and ViT-H/14
(head width 80, RoBERTa-large config) at 2 layers, and ViT-B/16 at its real size.
"""

import json

import numpy as np
import pytest
import torch

from support.clip_references import cn_clip, cn_clip_model, modelscope_model
from shiwu.models.clip_files import checkpoint_state, load_clip, load_tokenizer
from shiwu.models.clip import CLIPConfig, ChineseCLIP
from shiwu.models.vit import VisionConfig, resize_positional_embedding

TEXTS = ["一张猫的照片。", "电饭煲", "a photo of a TABBY cat, 在沙发上", "", "超长的标签" * 12]
SMALL = ["ViT-B-16", "ViT-L-14-336", "ViT-H-14"]


def _configs(directory):
    return [json.loads((directory / f"{kind}_model_config.json").read_text()) for kind in ("vision", "text")]


def _images(n, resolution, seed=0):
    return torch.randn(n, 3, resolution, resolution, generator=torch.Generator().manual_seed(seed))


def _assert_close(actual, expected, what):
    assert actual.shape == expected.shape, what
    assert expected.abs().max() > 0.1, f"{what}: degenerate comparison"
    delta = (actual - expected).abs().max().item()
    assert delta < 1e-4, f"{what}: max |Δ| = {delta:.2e}"


@pytest.fixture(scope="module", params=SMALL)
def models(request, clip_dir):
    """(directory, ours, ModelScope's CLIP, cn_clip's CLIP) on the same synthetic weights."""
    directory = clip_dir(request.param)
    vision, text = _configs(directory)
    state = checkpoint_state(directory / "pytorch_model.bin")
    return (directory, load_clip(directory), modelscope_model(directory).clip_model,
            cn_clip_model(vision, text, state))


def _references(models):
    _, _, modelscope, cn = models
    return {"modelscope": modelscope, "cn_clip": cn}


@pytest.mark.slow
def test_parameter_names_and_shapes_are_the_references(models):
    _, ours, modelscope, cn = models
    mine = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert mine == {k: tuple(v.shape) for k, v in cn.state_dict().items()}
    assert mine == {k: tuple(v.shape) for k, v in modelscope.state_dict().items()
                    if not k.startswith("bert.pooler.")}  # ModelScope's unused pooler


def test_image_embeddings_match(models):
    _, ours, *_ = models
    images = _images(2, ours.config.vision.image_resolution)
    with torch.inference_mode():
        actual = ours.encode_image(images)
        for name, reference in _references(models).items():
            _assert_close(actual, reference.encode_image(images), f"image embedding vs {name}")


def test_text_embeddings_match(models):
    directory, ours, *_ = models
    ids = torch.from_numpy(load_tokenizer(directory)(TEXTS))
    assert (ids[:, -1] == 0).any() and (ids[:, -1] != 0).any()  # padded rows and a full-length one
    with torch.inference_mode():
        actual = ours.encode_text(ids)
        for name, reference in _references(models).items():
            _assert_close(actual, reference.encode_text(ids), f"text embedding vs {name}")


def test_logits_match(models):
    directory, ours, *_ = models
    ids = torch.from_numpy(load_tokenizer(directory)(TEXTS))
    images = _images(3, ours.config.vision.image_resolution, seed=1)
    with torch.inference_mode():
        actual = ours.similarity(images, ids)
        for name, reference in _references(models).items():
            expected, _ = reference.get_similarity(images, ids)
            _assert_close(actual, expected, f"logits_per_image vs {name}")
            assert torch.equal(actual.argmax(1), expected.argmax(1))


@pytest.fixture(scope="module")
def real_size(clip_dir):
    """ViT-B/16 @ RoBERTa-wwm-ext-base at full size, with ModelScope's loader and cn_clip's
    ``create_model`` (each its own official loading path) on the same file."""
    directory = clip_dir("ViT-B-16", small=False)
    checkpoint = torch.load(directory / "pytorch_model.bin", map_location="cpu", weights_only=True)
    cn = cn_clip().utils.create_model("ViT-B-16@RoBERTa-wwm-ext-base-chinese", checkpoint).float().eval()
    del checkpoint
    return directory, load_clip(directory), {"modelscope": modelscope_model(directory).clip_model, "cn_clip": cn}


@pytest.mark.slow
def test_real_size_vit_b16_matches_both_references(real_size):
    directory, ours, references = real_size
    assert 187e6 < sum(p.numel() for p in ours.parameters()) < 190e6  # the 188M of the model card
    ids = torch.from_numpy(load_tokenizer(directory)(TEXTS))
    images = _images(2, 224, seed=2)
    with torch.inference_mode():
        image, text, logits = ours.encode_image(images), ours.encode_text(ids), ours.similarity(images, ids)
        for name, reference in references.items():
            _assert_close(image, reference.encode_image(images), f"ViT-B/16 image embedding vs {name}")
            _assert_close(text, reference.encode_text(ids), f"RoBERTa text embedding vs {name}")
            _assert_close(logits, reference.get_similarity(images, ids)[0], f"ViT-B/16 logits vs {name}")


@pytest.mark.parametrize("size", [160, 288])
def test_another_input_size_interpolates_as_cn_clip(clip_dir, size):
    """At another input size the positional embedding is resized as cn_clip's
    ``resize_pos_embed`` does, and the embeddings match cn_clip's model built for that size."""
    directory = clip_dir("ViT-B-16")
    vision, text = _configs(directory)
    state = {k: v.float() for k, v in checkpoint_state(directory / "pytorch_model.bin").items()}
    resized = dict(state)
    reference = cn_clip().model.CLIP(**{**vision, **text, "image_resolution": size})
    cn_clip().model.resize_pos_embed(resized, reference)
    reference.load_state_dict({k: v for k, v in resized.items() if not k.startswith("bert.pooler.")})
    reference.eval()

    ours = load_clip(directory, image_size=size)
    assert torch.equal(ours.visual.positional_embedding, resized["visual.positional_embedding"])
    assert torch.equal(resize_positional_embedding(state["visual.positional_embedding"], size // 16),
                       resized["visual.positional_embedding"])
    images = _images(2, size, seed=3)
    with torch.inference_mode():
        _assert_close(ours.encode_image(images), reference.encode_image(images), f"{size} px")


def test_all_released_configs_build_with_their_sizes():
    """From the cn-clip package's real config files: parameter counts of the model cards."""
    folder = cn_clip().folder / "model_configs"
    read = lambda name: json.loads((folder / f"{name}.json").read_text())  # noqa: E731
    expected = {"ViT-B-16": (188e6, "RoBERTa-wwm-ext-base-chinese"),
                "ViT-L-14": (406e6, "RoBERTa-wwm-ext-base-chinese"),
                "ViT-L-14-336": (407e6, "RoBERTa-wwm-ext-base-chinese"),
                "ViT-H-14": (958e6, "RoBERTa-wwm-ext-large-chinese")}
    for vision, (parameters, text) in expected.items():
        config = CLIPConfig.from_json(read(vision), read(text))
        with torch.device("meta"):
            network = ChineseCLIP(config)
        count = sum(p.numel() for p in network.parameters())
        assert abs(count - parameters) / parameters < 0.01, (vision, count)
    assert CLIPConfig.from_json(read("ViT-H-14"), read("RoBERTa-wwm-ext-large-chinese")).vision.heads == 16
    assert VisionConfig.from_json(read("ViT-L-14-336")).grid == 24


def test_the_resnet_tower_is_refused_with_its_reason():
    folder = cn_clip().folder / "model_configs"
    with pytest.raises(ValueError, match="ResNet image tower.*RN50.*ViT"):
        VisionConfig.from_json(json.loads((folder / "RN50.json").read_text()))


def test_text_batches_cut_to_their_longest_text_give_the_padded_result(clip_dir):
    from shiwu.models.clip import encode_texts

    directory = clip_dir("ViT-B-16")
    ours = load_clip(directory)
    ids = torch.from_numpy(load_tokenizer(directory)(TEXTS * 3))
    with torch.inference_mode():
        expected = ours.encode_text(ids)
    actual = encode_texts(ours, ids, batch=4)
    assert (actual - expected).abs().max().item() < 1e-5
    assert np.isfinite(actual.numpy()).all()
