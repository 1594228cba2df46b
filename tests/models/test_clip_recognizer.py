"""Chinese-CLIP through the one model door: `shiwu predict --model <CLIP dir> --labels 快递柜,电饭煲`
answers like the official model's logits_per_image, on every backend, with the text encoded once
and the image graph exported once per label set."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from support.photos import DATA, PHOTOS

from shiwu import Recognizer
from shiwu.cli import main
from shiwu.cli.logs import configure as configure_logging
from shiwu.images import load_image
from shiwu.models import chinese_clip
from shiwu.models.clip import DEFAULT_PROMPT
from shiwu.models.clip_files import load_clip, load_tokenizer
from shiwu.models.registry import ModelNotFound, ModelRef, get_model

LABELS = ["虎斑猫", "电饭煲", "油菜花田", "快递柜", "宇航员", "咖啡"]


@pytest.fixture(scope="module")
def model_dir(clip_dir):
    return clip_dir("ViT-B-16")


def reference(model_dir, paths, labels=LABELS, prompt=DEFAULT_PROMPT):
    """logits_per_image and the normalised image embeddings from the full network, eagerly."""
    clip, tokenizer = load_clip(model_dir), load_tokenizer(model_dir)
    pre = get_model(str(model_dir)).preprocessing
    images = torch.from_numpy(pre.batch([load_image(p, min_size=None) for p in paths]))
    ids = torch.from_numpy(tokenizer([prompt.replace("{}", label) for label in labels]))
    with torch.inference_mode():
        return clip.similarity(images, ids).numpy(), F.normalize(clip.encode_image(images), dim=-1).numpy()


@pytest.mark.parametrize("backend", ["torch", "onnxruntime", "openvino"])
def test_zero_shot_logits_and_embeddings_equal_the_full_model(model_dir, backend):
    want_logits, want_embeddings = reference(model_dir, PHOTOS[:4])
    recognizer = Recognizer(str(model_dir), labels=",".join(LABELS), backend=backend, threads=2)
    assert recognizer.spec.num_classes == len(LABELS)
    results = recognizer.recognize(PHOTOS[:4], topk=len(LABELS), embed=True)
    for result, logits, embedding in zip(results, want_logits, want_embeddings):
        probabilities = np.exp(logits - logits.max())
        probabilities /= probabilities.sum()
        got = {p.index: p.score for p in result.predictions}
        assert result.predictions[0].label == LABELS[int(logits.argmax())]
        assert max(abs(got[i] - probabilities[i]) for i in range(len(LABELS))) < 1e-4
        assert np.abs(result.embedding - embedding).max() < 1e-4


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_cached_runtimes_start_without_torch(model_dir, backend):
    """Once the label set's graph is exported, ONNX Runtime and OpenVINO run it without torch
    (reading the model's configs must not import the networks): start-up time and memory."""
    import subprocess
    import sys

    Recognizer(str(model_dir), labels=",".join(LABELS), backend=backend)  # export, text cache
    code = (f"import sys; from shiwu import Recognizer; "
            f"r = Recognizer({str(model_dir)!r}, labels={','.join(LABELS)!r}, backend={backend!r}); "
            f"p = r.predict({str(PHOTOS[0])!r}); print(p[0].index, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-1] == "False"


def test_labels_file_prompt_and_the_text_cache(model_dir, tmp_path, capsys, monkeypatch):
    labels = tmp_path / "我的标签.txt"
    labels.write_text("\n".join(LABELS) + "\n\n", encoding="utf-8")
    configure_logging()  # the library logs its progress; the command line shows it as `shiwu: ...`
    first = Recognizer(str(model_dir), labels=str(labels), prompt="{}", backend="torch")
    assert "encoding 6 label texts" in capsys.readouterr().err
    calls = []
    real = chinese_clip.clip_files.load_clip
    monkeypatch.setattr(chinese_clip.clip_files, "load_clip",
                        lambda *a, **k: calls.append(k.get("text_tower", True)) or real(*a, **k))
    again = Recognizer(str(model_dir), labels=str(labels), prompt="{}", backend="torch")
    assert calls == [False]  # the image tower only: the label texts came from the cache
    batch = again.preprocessing.batch([load_image(DATA / "coffee.jpg", min_size=None)])
    # to rounding: the cached label texts must give the answers the encoded ones gave
    np.testing.assert_allclose(again.logits(batch), first.logits(batch), rtol=1e-5, atol=1e-4)
    want, _ = reference(model_dir, [DATA / "coffee.jpg"], prompt="{}")
    assert np.abs(again.logits(batch) - want).max() < 1e-4


def test_each_label_set_and_prompt_is_its_own_export(model_dir):
    paths = {Recognizer(str(model_dir), labels=labels, prompt=prompt, backend="onnxruntime").backend.model_path
             for labels, prompt in (("猫,狗", None), ("猫,狗,鸟", None), ("猫,狗", "{}"), ("猫,狗", None))}
    assert len(paths) == 3


def test_cli_predict_with_comma_labels_and_default_imagenet_names(model_dir, capsys):
    assert main(["predict", str(DATA / "chelsea.jpg"), "--model", str(model_dir), "--labels", "快递柜，电饭煲,油菜花田",
                 "--backend", "onnxruntime", "--json", "-k", "3"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert sorted(p["label"] for p in row["predictions"]) == ["快递柜", "油菜花田", "电饭煲"]
    assert abs(sum(p["score"] for p in row["predictions"]) - 1) < 1e-3
    spec = get_model(str(model_dir))
    assert spec.num_classes == 1000 and spec.labels().zh[281] == "虎斑猫"


def test_label_problems_are_warnings_or_clear_errors(model_dir, capsys):
    spec = get_model(ModelRef(str(model_dir), labels="猫,狗,猫"))
    assert spec.labels().zh == ("猫", "狗")
    assert "repeated labels merged: 猫" in capsys.readouterr().err
    get_model(ModelRef(str(model_dir), labels="猫," + "很长" * 40))
    assert "longer than the model's 52 tokens" in capsys.readouterr().err
    with pytest.raises(ModelNotFound, match="empty label"):
        get_model(ModelRef(str(model_dir), labels="猫,,狗"))
    with pytest.raises(ModelNotFound, match="exactly once"):
        get_model(ModelRef(str(model_dir), labels="猫", prompt="一张照片"))
    with pytest.raises(ModelNotFound, match="own preprocessing"):
        get_model(ModelRef(str(model_dir), resize="crop"))


def test_closed_set_models_refuse_label_texts(capsys):
    assert main(["predict", str(DATA / "coffee.jpg"), "--labels", "快递柜,电饭煲"]) == 2
    assert "--labels" in capsys.readouterr().err
    with pytest.raises(ModelNotFound, match="for Chinese-CLIP models"):
        get_model(ModelRef("efficientnet-lite0", prompt="{}"))


def test_a_missing_text_tower_file_and_configs_that_disagree(model_dir, tmp_path, capsys):
    broken = tmp_path / "clip"
    broken.mkdir()
    for f in model_dir.iterdir():
        if f.name != "vocab.txt":
            (broken / f.name).symlink_to(f)
    assert main(["predict", str(DATA / "coffee.jpg"), "--model", str(broken), "--labels", "猫,狗"]) == 2
    assert "vocab.txt" in capsys.readouterr().err
    (broken / "vocab.txt").symlink_to(model_dir / "vocab.txt")
    config = json.loads((model_dir / "vision_model_config.json").read_text())
    (broken / "vision_model_config.json").unlink()
    (broken / "vision_model_config.json").write_text(json.dumps({**config, "vision_width": config["vision_width"] * 2}))
    assert main(["predict", str(DATA / "coffee.jpg"), "--model", str(broken), "--labels", "猫,狗",
                 "--backend", "torch"]) == 2
    assert "vision_model_config.json" in capsys.readouterr().err


def test_text_queries_land_in_the_image_embedding_space(model_dir):
    spec = get_model(str(model_dir))
    texts = spec.text_encoder(["一张猫的照片。", "海边的日落"])
    clip, tokenizer = load_clip(model_dir), load_tokenizer(model_dir)
    with torch.inference_mode():
        want = F.normalize(clip.encode_text(torch.from_numpy(tokenizer(["一张猫的照片。", "海边的日落"]))), dim=-1)
    assert texts.shape == (2, clip.config.embed_dim)
    assert np.abs(texts - want.numpy()).max() < 1e-5
    assert get_model("efficientnet-lite0").text_encoder is None
