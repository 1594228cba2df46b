"""The article reader's own files: model.pth, traced_model_cpu.pt, model.onnx + label_map.json.

Real ImageNet weights (EfficientNet-Lite0's) in a class shiwu does not know (the
`efficientnet-lite-pytorch` reference package), saved the three ways the article does, and its
recipe (推理.py) run here as the reference: every shiwu path must give its top-1.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from support.article import article_tensor
from support.photos import DATA, PHOTOS

from shiwu import Recognizer
from shiwu.cli import main
from shiwu.images import load_image
from shiwu.labels import LabelSet
from shiwu.models.registry import ModelRef, UntrustedModel, get_model

SHIWU = str(Path(sys.executable).parent / "shiwu")


@pytest.mark.parametrize("file, backend", [
    ("model.pth", "torch"), ("model.pth", "onnxruntime"),
    ("traced_model_cpu.pt", "torchscript"), ("traced_model_cpu.pt", "openvino"),
    ("model.onnx", "onnxruntime"), ("model.onnx", "openvino"),
])
@pytest.mark.slow
def test_each_article_file_gives_the_article_top1_on_every_photo_in_chinese(article, file, backend):
    recognizer = Recognizer(str(article["folder"] / file), labels=article["labels"], resize="squash",
                            trust_model_code=file.endswith(".pth"), backend=backend, threads=2)
    results = recognizer.recognize(PHOTOS, topk=3)
    assert [r.predictions[0].index for r in results] == [article["top1"][p] for p in PHOTOS]
    labels = LabelSet.imagenet()
    assert all(r.predictions[0].label == labels.zh[r.predictions[0].index] for r in results)
    assert {r.model for r in results} == {file}  # the JSON `model` field is the file's name
    assert recognizer.backend.precision == "fp32"


def test_squash_gives_the_article_tensor_to_float_precision(article):
    spec = get_model(ModelRef(str(article["folder"] / "model.onnx"), labels=article["labels"], resize="squash"))
    assert spec.preprocessing.decode_min_size is None  # full decode, as the recipe does
    for path in PHOTOS:
        ours = spec.preprocessing(load_image(path, min_size=spec.preprocessing.decode_min_size))
        assert ours.shape == (3, 224, 224)
        assert np.abs(ours - article_tensor(path)).max() < 1e-5


def test_crop_is_torchvision_resize_then_centre_crop(article):
    spec = get_model(ModelRef(str(article["folder"] / "model.onnx"), resize="crop",
                              mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), interpolation="bicubic"))
    image = load_image(DATA / "astronaut.jpg")
    short = 256  # 224 / 0.875
    w, h = image.size
    resized = image.resize((short, int(short * h / w)) if w <= h else (int(short * w / h), short),
                           Image.Resampling.BICUBIC)
    left, top = round((resized.width - 224) / 2), round((resized.height - 224) / 2)
    want = (np.asarray(resized.crop((left, top, left + 224, top + 224)), np.float32) / 255 - 0.5) / 0.25
    assert np.abs(spec.preprocessing(image) - want.transpose(2, 0, 1)).max() < 1e-5


@pytest.mark.slow
def test_untrusted_pickle_is_refused_with_exit_2_naming_the_flag(article):
    run = subprocess.run([SHIWU, "predict", str(DATA / "coffee.jpg"), "--model", str(article["folder"] / "model.pth"),
                          "--labels", article["labels"]], capture_output=True, text=True, encoding="utf-8",
                         timeout=300)
    assert run.returncode == 2
    assert "--trust-model-code" in run.stderr and "runs code" in run.stderr
    assert "efficientnet_lite_pytorch" in run.stderr  # which classes it would import
    assert "Traceback" not in run.stderr and not run.stdout
    with pytest.raises(UntrustedModel):
        Recognizer(str(article["folder"] / "model.pth"))


def test_traced_and_onnx_files_need_no_trust_flag_on_the_command_line(article, capsys):
    for file in ("traced_model_cpu.pt", "model.onnx"):
        assert main(["predict", str(DATA / "coffee.jpg"), "--model", str(article["folder"] / file),
                     "--labels", article["labels"], "--resize", "squash", "--backend", "onnxruntime",
                     "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["predictions"][0]["label"] for r in rows] == ["浓缩咖啡", "浓缩咖啡"]
    assert [r["model"] for r in rows] == ["traced_model_cpu.pt", "model.onnx"]


def _save_tagged_cuda(obj, path):
    """torch.save as on a GPU machine: every storage tagged cuda:0 (this torch has no CUDA)."""
    registry = torch.serialization._package_registry
    entry = (0, lambda storage: "cuda:0", lambda storage, location: None)
    registry.insert(0, entry)
    try:
        torch.save(obj, path)
    finally:
        registry.remove(entry)


def test_a_whole_model_saved_on_a_gpu_and_wrapped_in_dataparallel_loads_on_the_cpu(article, tmp_path):
    path = tmp_path / "gpu_model.pth"
    _save_tagged_cuda(torch.nn.DataParallel(article["model"]), path)
    with pytest.raises(RuntimeError, match="CUDA"):  # the article's FAQ Q1, without map_location
        torch.load(path, weights_only=False)
    recognizer = Recognizer(str(path), labels=article["labels"], resize="squash", trust_model_code=True,
                            backend="torch", threads=2)
    assert [r.predictions[0].index for r in recognizer.recognize(PHOTOS[:4])] == \
        [article["top1"][p] for p in PHOTOS[:4]]


@pytest.mark.parametrize("case, message", [
    ("state_dict", "holds only weights"),
    ("truncated", "truncated, corrupt"),
    ("random_bytes", "truncated, corrupt"),
    ("text_as_onnx", "is not an ONNX model"),
    ("empty", "is empty"),
    ("label_mismatch", "has 999 labels but model.onnx outputs 1,000 classes"),
    ("missing_labels", "labels file"),
    ("bad_labels", "not valid JSON"),
])
def test_broken_files_are_clear_errors_with_exit_2(article, tmp_path, capsys, case, message):
    folder = article["folder"]
    model, labels = folder / "model.onnx", article["labels"]
    if case == "state_dict":
        model = tmp_path / "weights.pth"
        torch.save(article["model"].state_dict(), model)
    elif case == "truncated":
        model = tmp_path / "model.pth"
        data = (folder / "model.pth").read_bytes()
        model.write_bytes(data[:len(data) // 2])
    elif case == "random_bytes":
        model = tmp_path / "model.pt"
        model.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif case == "text_as_onnx":
        model = tmp_path / "model.onnx"
        model.write_text("this is not a model\n")
    elif case == "empty":
        model = tmp_path / "model.onnx"
        model.touch()
    elif case == "label_mismatch":
        labels = tmp_path / "labels.txt"
        labels.write_text("\n".join(f"类{i}" for i in range(999)), encoding="utf-8")
    elif case == "missing_labels":
        labels = tmp_path / "nowhere.json"
    elif case == "bad_labels":
        labels = tmp_path / "label_map.json"
        labels.write_text("{'0': 猫", encoding="utf-8")
    code = main(["predict", str(DATA / "coffee.jpg"), "--model", str(model), "--labels", str(labels),
                 "--trust-model-code", "--backend", "onnxruntime"])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err, err



def test_a_class_saved_from_a_script_says_to_move_it_into_a_module(tmp_path, capsys):
    # torch.save(model) in a script stores the class as __main__.Net: "put the .py file next to
    # the model" (what the message said) can never find it
    script = ("import torch\n"
              "class Net(torch.nn.Module):\n"
              "    def __init__(self):\n"
              "        super().__init__(); self.fc = torch.nn.Linear(3 * 32 * 32, 4)\n"
              "    def forward(self, x):\n"
              "        return self.fc(x.flatten(1))\n"
              f"torch.save(Net(), {str(tmp_path / 'model.pth')!r})\n")
    (tmp_path / "train.py").write_text(script)
    subprocess.run([sys.executable, str(tmp_path / "train.py")], check=True, timeout=120)
    code = main(["predict", str(DATA / "coffee.jpg"), "--model", str(tmp_path / "model.pth"),
                 "--trust-model-code", "--backend", "torch"])
    err = capsys.readouterr().err
    assert code == 2
    assert "defined in the script that saved it (__main__): move the class into a module" in err, err
    assert "Put the .py file that defines it next to" not in err

def test_no_labels_gives_placeholders_and_a_warning(article, tmp_path, capsys):
    lonely = tmp_path / "model.onnx"
    lonely.write_bytes((article["folder"] / "model.onnx").read_bytes())
    predictions = Recognizer(str(lonely), resize="squash", backend="onnxruntime").predict(DATA / "coffee.jpg")
    assert predictions[0].label == f"类别{article['top1'][DATA / 'coffee.jpg']}"
    assert "no labels for model.onnx" in capsys.readouterr().err
    # a labels file beside it is used, and a line says which (nobody named it)
    (tmp_path / "label_map.json").write_bytes(Path(article["labels"]).read_bytes())
    beside = Recognizer(str(lonely), resize="squash", backend="onnxruntime")
    assert beside.predict(DATA / "coffee.jpg")[0].label == "浓缩咖啡"
    assert "labels of model.onnx: label_map.json, found beside it" in capsys.readouterr().err
