"""Finding and loading a Chinese-CLIP model directory (ModelScope layout), and writing one."""

import json
import shutil

import pytest
import torch

from support.clip_references import cn_clip_folder
from shiwu.models import clip_files as chinese_clip, synthetic_clip
from shiwu.models.clip_files import (MODEL_ID, find_model_dir, is_synthetic, load_clip, load_tokenizer,
                                       locate)
from shiwu.models.registry import ModelNotFound

DOWNLOAD = f"modelscope download --model {MODEL_ID} --local_dir"


def _embeddings(network, seed=0):
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        return network.encode_image(images)


def assert_same_network(loaded, expected):
    """Every weight of ``loaded`` equal to ``expected``'s, bit for bit, and the same embeddings.
    The weights decide; the embeddings are compared to rounding, which is all a loader promises."""
    theirs = expected.state_dict()
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, theirs[name]), name
    torch.testing.assert_close(_embeddings(loaded), _embeddings(expected), rtol=1e-4, atol=1e-5)


@pytest.fixture
def small(clip_dir, tmp_path):
    """A private copy of the small synthetic model, free to be damaged."""
    return shutil.copytree(clip_dir("ViT-B-16"), tmp_path / "model")


def test_the_synthetic_directory_is_the_official_layout(clip_dir):
    directory = clip_dir("ViT-B-16")
    assert sorted(p.name for p in directory.iterdir()) == [
        "SYNTHETIC.txt", "configuration.json", "pytorch_model.bin", "text_model_config.json",
        "vision_model_config.json", "vocab.txt"]
    configuration = json.loads((directory / "configuration.json").read_text())
    assert configuration["task"] == "multi-modal-embedding" and configuration["synthetic"] is True
    assert configuration["model"]["type"] == "clip-multi-modal-embedding"
    assert (directory / "vocab.txt").read_bytes() == (cn_clip_folder() / "vocab.txt").read_bytes()
    real = json.loads((cn_clip_folder() / "model_configs" / "ViT-B-16.json").read_text())
    written = json.loads((directory / "vision_model_config.json").read_text())
    assert written["vision_patch_size"] == real["vision_patch_size"] == 16 and written["vision_layers"] == 2

    checkpoint = torch.load(directory / "pytorch_model.bin", map_location="cpu", weights_only=True)
    state = checkpoint["state_dict"]
    assert all(key.startswith("module.") for key in state)
    dtypes = {key[len("module."):]: value.dtype for key, value in state.items()}
    # cn_clip's convert_weights: fp16 but for the image tower's norms and embeddings, the scale.
    assert dtypes["visual.conv1.weight"] == dtypes["bert.embeddings.word_embeddings.weight"] == torch.half
    assert dtypes["visual.transformer.resblocks.0.attn.in_proj_weight"] == dtypes["text_projection"] == torch.half
    assert dtypes["visual.ln_pre.weight"] == dtypes["visual.positional_embedding"] == torch.float32
    assert dtypes["logit_scale"] == torch.float32 and "bert.pooler.dense.weight" in dtypes
    assert is_synthetic(directory)


def test_loaded_network_is_fp32_eval_without_autograd(clip_dir):
    network = load_clip(clip_dir("ViT-B-16"))
    assert not network.training
    assert all(p.dtype == torch.float32 and not p.requires_grad and p.device.type == "cpu"
               for p in network.parameters())
    assert network.logit_scale.exp().item() == pytest.approx(100.0, rel=1e-3)


@pytest.mark.parametrize("wrapper, module_prefix, legacy_format", [
    (False, False, False), (True, False, False), (False, True, False), (True, True, True)])
def test_every_checkpoint_form_loads_to_the_same_network(clip_dir, tmp_path, wrapper, module_prefix,
                                                         legacy_format):
    # the fixture's own weights saved again in each form: two writings of the synthetic model are
    # not bit for bit alike (in CI on an AMX Xeon its calibrated ln_post.bias differed)
    source = clip_dir("ViT-B-16")
    expected = load_clip(source)
    directory = shutil.copytree(source, tmp_path / "model")
    raw = torch.load(source / "pytorch_model.bin", map_location="cpu", weights_only=True)
    state = {k.removeprefix("module."): v for k, v in raw.get("state_dict", raw).items()}
    if module_prefix:
        state = {f"module.{k}": v for k, v in state.items()}
    torch.save({"state_dict": state} if wrapper else state, directory / "pytorch_model.bin",
               _use_new_zipfile_serialization=not legacy_format)
    assert_same_network(load_clip(directory), expected)


@pytest.mark.parametrize("prefix", ["clip_model.", "module.clip_model."])
def test_a_modelscope_fine_tune_loads(small, prefix):
    expected = load_clip(small)
    path = small / "pytorch_model.bin"
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    torch.save({"state_dict": {prefix + k[len("module."):]: v for k, v in state.items()}}, path)
    assert_same_network(load_clip(small), expected)


def test_only_the_image_tower(clip_dir):
    directory = clip_dir("ViT-B-16")
    image_only = load_clip(directory, text_tower=False)
    assert image_only.bert is None and not any(k.startswith("bert.") for k in image_only.state_dict())
    assert_same_network(image_only, load_clip(directory))
    with pytest.raises(RuntimeError, match="text_tower=False"):
        image_only.encode_text(torch.ones(1, 52, dtype=torch.long))


def _edit_config(directory, name, **changes):
    path = directory / name
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def test_a_config_that_disagrees_with_the_weights_names_the_tensor_and_both_shapes(small):
    _edit_config(small, "vision_model_config.json", vision_width=256)
    with pytest.raises(ModelNotFound, match=r"visual\.\S+ has shape \(128.*\) in pytorch_model\.bin but "
                                            r"\(256.*\) by vision_model_config\.json"):
        load_clip(small)


def test_a_text_config_that_disagrees_names_the_text_config(small):
    _edit_config(small, "text_model_config.json", text_hidden_size=96, text_num_attention_heads=3)
    with pytest.raises(ModelNotFound, match=r"has shape \(64, 128\) in pytorch_model\.bin but \(96, 128\) by "
                                            r"text_model_config\.json"):
        load_clip(small)


@pytest.mark.parametrize("name, field, layers", [("vision_model_config.json", "vision_layers", 3),
                                                 ("text_model_config.json", "text_num_hidden_layers", 1)])
def test_a_wrong_layer_count_says_so(small, name, field, layers):
    _edit_config(small, name, **{field: layers})
    with pytest.raises(ModelNotFound, match=f"{name} says {field}={layers} but pytorch_model.bin has 2 layers"):
        load_clip(small)


def test_a_resnet_model_is_refused_with_its_reason(small):
    shutil.copyfile(cn_clip_folder() / "model_configs" / "RN50.json", small / "vision_model_config.json")
    with pytest.raises(ModelNotFound, match="ResNet image tower.*RN50"):
        load_clip(small)


def test_a_checkpoint_of_another_model_is_refused(small):
    torch.save({"state_dict": {"module.conv1.weight": torch.zeros(64, 3, 7, 7)}}, small / "pytorch_model.bin")
    with pytest.raises(ModelNotFound, match="tensors are missing.*Chinese-CLIP checkpoint.*conv1.weight"):
        load_clip(small)


@pytest.mark.parametrize("missing", ["pytorch_model.bin", "vocab.txt", "text_model_config.json"])
def test_a_missing_file_says_how_to_download(small, missing):
    (small / missing).unlink()
    with pytest.raises(ModelNotFound, match=f"no {missing}") as error:
        load_clip(small)
    assert f"{DOWNLOAD} {small}" in str(error.value)


def test_a_broken_config_is_a_clear_error(small):
    (small / "vision_model_config.json").write_text("{not json")
    with pytest.raises(ModelNotFound, match="vision_model_config.json: cannot read it"):
        load_clip(small)


def test_tokenizer_of_the_directory(small):
    tokenizer = load_tokenizer(small)
    assert tokenizer("猫")[0, :3].tolist() == [101, tokenizer.vocab["猫"], 102]
    (small / "vocab.txt").write_text("猫\n狗\n", encoding="utf-8")
    with pytest.raises(ModelNotFound, match=r"not a BERT vocabulary"):
        load_tokenizer(small)


# ----------------------------------------------------------------------------- the ModelScope cache

@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "modelscope-cache"
    monkeypatch.setenv("MODELSCOPE_CACHE", str(root))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # never the user's ~/.cache/modelscope
    return root


@pytest.mark.parametrize("layout", ["hub/damo/multi-modal_clip-vit-base-patch16_zh",
                                    "hub/models/iic/multi-modal_clip-vit-base-patch16_zh",
                                    "damo/multi-modal_clip-vit-base-patch16_zh",
                                    "models/iic--multi-modal_clip-vit-base-patch16_zh/snapshots/abc123"])
def test_found_in_every_cache_layout_under_either_org(clip_dir, cache, layout):
    target = cache / layout
    shutil.copytree(clip_dir("ViT-B-16"), target)
    assert find_model_dir(MODEL_ID) == target
    assert find_model_dir("iic/multi-modal_clip-vit-base-patch16_zh") == target
    assert locate(f"modelscope:{MODEL_ID}") == target


def test_a_half_download_is_not_found(clip_dir, cache):
    target = cache / "hub" / MODEL_ID
    shutil.copytree(clip_dir("ViT-B-16"), target)
    (target / "pytorch_model.bin").unlink()
    assert find_model_dir(MODEL_ID) is None


def test_not_downloaded_gives_the_download_command(cache):
    with pytest.raises(ModelNotFound, match="is not on this machine") as error:
        locate(f"modelscope:{MODEL_ID}")
    assert f"{DOWNLOAD} ./multi-modal_clip-vit-base-patch16_zh" in str(error.value)
    large = "damo/multi-modal_clip-vit-large-patch14_zh"
    with pytest.raises(ModelNotFound, match=f"--model {large} "):
        locate(large)


def test_a_directory_path_is_taken_as_it_is(clip_dir, tmp_path):
    assert locate(clip_dir("ViT-B-16")) == clip_dir("ViT-B-16").resolve()
    with pytest.raises(ModelNotFound, match="does not exist") as error:
        locate(tmp_path / "nowhere")
    assert DOWNLOAD in str(error.value)


def test_no_torch_to_find_a_model():
    import subprocess
    import sys

    code = ("import sys, shiwu.models.clip_files as c; c.find_model_dir(); c.clip_preprocessing(); "
            "print('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"
    assert chinese_clip.MODEL_ID.startswith("damo/")


# ----------------------------------------------------------------------------- the writer

def test_the_command_line_writes_a_loadable_model(tmp_path, capsys):
    assert synthetic_clip.main([str(tmp_path / "h14"), "--config", "ViT-H-14", "--small",
                                "--no-wrapper", "--no-module-prefix"]) == 0
    assert "wrote SYNTHETIC Chinese-CLIP model (ViT-H-14" in capsys.readouterr().out
    network = load_clip(tmp_path / "h14")
    assert network.config.vision.head_width == 80 and network.config.vision.patch_size == 14
    assert network.config.text.vocab_size == 21128
    state = torch.load(tmp_path / "h14" / "pytorch_model.bin", map_location="cpu", weights_only=True)
    assert "visual.conv1.weight" in state  # bare and unprefixed, as asked


def test_the_command_line_refuses_rn50(tmp_path, capsys):
    with pytest.raises(SystemExit):
        synthetic_clip.main([str(tmp_path / "rn50"), "--config", "ViT-B-16", "--text-config", "nonexistent"])
    assert "no config 'nonexistent'" in capsys.readouterr().err


def test_the_synthetic_model_tells_photos_apart(clip_dir, photos):
    """Calibrated random weights: like a trained model's, the top label depends on the photo and
    wins by a margin (uncalibrated, one label wins on every photo by a hair)."""
    from shiwu.images import load_image
    from shiwu.models.clip_files import clip_preprocessing
    from shiwu.models.clip import zero_shot_head

    directory = clip_dir("ViT-B-16")
    head = zero_shot_head(load_clip(directory), load_tokenizer(directory),
                          ["虎斑猫", "电饭煲", "油菜花田", "快递柜", "海边的日落", "宇航员", "咖啡", "硬币"])
    pre = clip_preprocessing()
    with torch.inference_mode():
        probabilities = head(torch.from_numpy(pre.batch([load_image(p) for p in photos]))).softmax(1)
    assert len(set(probabilities.argmax(1).tolist())) >= 3
    assert probabilities.max(1).values.mean() > 0.5
