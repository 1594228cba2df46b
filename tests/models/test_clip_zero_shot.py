"""The zero-shot head: image -> logits equal to the reference's ``logits_per_image`` for the
prompted labels, and the L2-normalised image embedding beside them; exported to ONNX it runs in
ONNX Runtime and OpenVINO (fp32) with torch's outputs."""

import numpy as np
import pytest
import torch

from support.clip_references import modelscope_model
from shiwu.images import load_image
from shiwu.models.clip_files import clip_preprocessing, load_clip, load_tokenizer
from shiwu.models.clip import DEFAULT_PROMPT, ZeroShotHead, prompt_texts, zero_shot_head

LABELS = ["虎斑猫", "电饭煲", "油菜花田", "快递柜", "海边的日落", "宇航员", "咖啡"]


@pytest.fixture(scope="module", params=["ViT-B-16", "ViT-H-14"])
def model(request, clip_dir):
    directory = clip_dir(request.param)
    return directory, load_clip(directory), load_tokenizer(directory)


@pytest.fixture(scope="module")
def official(model):
    return modelscope_model(model[0]).clip_model


@pytest.fixture(scope="module")
def images(photos):
    pre = clip_preprocessing()
    batch = pre.batch([load_image(p, min_size=pre.decode_min_size) for p in photos[:4]])
    return torch.from_numpy(batch)


@pytest.mark.parametrize("prompt", [DEFAULT_PROMPT, "{}", "这是{}"])
def test_logits_are_the_official_logits_per_image(model, official, images, prompt):
    _, clip, tokenizer = model
    head = zero_shot_head(clip, tokenizer, LABELS, prompt)
    texts = torch.from_numpy(tokenizer([prompt.replace("{}", label) for label in LABELS]))
    with torch.inference_mode():
        expected, _ = official.get_similarity(images, texts)
        actual = head(images)
    assert actual.shape == (len(images), len(LABELS))
    assert expected.abs().max() > 0.5
    assert (actual - expected).abs().max().item() < 1e-4
    assert torch.equal(actual.argmax(1), expected.argmax(1))


def test_the_embedding_beside_the_logits(model, images):
    _, clip, tokenizer = model
    head = zero_shot_head(clip, tokenizer, LABELS)
    with torch.inference_mode():
        logits, embedding = head.forward_with_embedding(images)
        reference = clip.encode_image(images)
        assert torch.equal(head(images), logits)
    assert torch.allclose(embedding.norm(dim=1), torch.ones(len(images)), atol=1e-6)
    assert (embedding - reference / reference.norm(dim=1, keepdim=True)).abs().max() < 1e-6
    # The classifier is the logit scale times unit-length text embeddings.
    assert torch.allclose(head.classifier.weight.norm(dim=1), clip.logit_scale.exp().expand(len(LABELS)))
    both = zero_shot_head(clip, tokenizer, LABELS, return_embedding=True)
    with torch.inference_mode():
        pair = both(images)
    assert isinstance(pair, tuple) and torch.equal(pair[0], logits) and torch.equal(pair[1], embedding)


def test_the_head_shares_the_image_tower_and_learns_nothing(model):
    _, clip, tokenizer = model
    head = zero_shot_head(clip, tokenizer, LABELS)
    assert head.visual is clip.visual and not head.training
    assert head.classifier.bias is None and not any(p.requires_grad for p in head.parameters())


@pytest.mark.parametrize("labels, prompt, message", [
    ([], DEFAULT_PROMPT, "at least one label"),
    (["猫", "  "], DEFAULT_PROMPT, "label 2 of 2 is empty"),
    (["猫"], "一张照片", r"contain '\{\}' exactly once"),
    (["猫"], "{}和{}", r"contain '\{\}' exactly once"),
])
def test_bad_labels_and_prompts_are_clear_errors(labels, prompt, message):
    with pytest.raises(ValueError, match=message):
        prompt_texts(labels, prompt)


def test_raw_text_prompt():
    assert prompt_texts(["猫", "a dog"], "{}") == ["猫", "a dog"]
    assert prompt_texts(["猫"]) == ["一张猫的照片。"]


def _export(module, path, example, outputs):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), str(path), dynamo=False, opset_version=17,
                          input_names=["image"], output_names=outputs,
                          dynamic_axes={name: {0: "batch"} for name in ["image", *outputs]})
    return path


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    """The head with both outputs, exported with batch 1 (run below with batch 3)."""
    _, clip, tokenizer = model
    head = zero_shot_head(clip, tokenizer, LABELS, return_embedding=True)
    resolution = clip.config.vision.image_resolution
    path = tmp_path_factory.mktemp("onnx") / "head.onnx"
    _export(head, path, torch.zeros(1, 3, resolution, resolution), ["logits", "embedding"])
    images = torch.randn(3, 3, resolution, resolution, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        logits, embedding = head(images)
    return path, images.numpy(), logits.numpy(), embedding.numpy()


def _assert_same(outputs, logits, embedding):
    assert np.abs(outputs[0] - logits).max() < 1e-4
    assert np.abs(outputs[1] - embedding).max() < 1e-4


def test_onnx_runtime_gives_torch_outputs(exported):
    import onnxruntime

    path, images, logits, embedding = exported
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    _assert_same(session.run(None, {"image": images}), logits, embedding)


def test_openvino_fp32_gives_torch_outputs(exported):
    import openvino

    path, images, logits, embedding = exported
    # OpenVINO runs bf16 on CPUs that have it unless asked for f32.
    compiled = openvino.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    result = compiled([images])
    _assert_same([result[0], result[1]], logits, embedding)


def test_the_bare_image_tower_exports_too(model, tmp_path):
    import onnxruntime

    _, clip, _ = model
    resolution = clip.config.vision.image_resolution
    path = _export(clip.visual, tmp_path / "visual.onnx", torch.zeros(2, 3, resolution, resolution),
                   ["embedding"])
    images = torch.randn(1, 3, resolution, resolution)
    with torch.inference_mode():
        expected = clip.visual(images).numpy()
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert np.abs(session.run(None, {"image": images.numpy()})[0] - expected).max() < 1e-4


def test_head_from_class_weights_directly():
    visual = torch.nn.Identity()
    weights = torch.eye(3) * 10
    head = ZeroShotHead(visual, weights)
    logits = head(torch.tensor([[3.0, 0.0, 4.0]]))
    assert torch.allclose(logits, torch.tensor([[6.0, 0.0, 8.0]]))
