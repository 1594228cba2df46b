"""The article reader's own files: model.pth, traced_model_cpu.pt, model.onnx + label_map.json.

Real ImageNet weights (EfficientNet-Lite0's) in a class shiwu does not know (the
`efficientnet-lite-pytorch` reference package), saved the three ways the article does, and its
recipe (推理.py) run here as the reference: every shiwu path must give its top-1.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from support.photos import DATA, PHOTOS

from shiwu import Recognizer
from shiwu.backends import BackendUnavailable
from shiwu.cli import main
from shiwu.images import load_image
from shiwu.labels import LabelSet
from shiwu.models.registry import ModelNotFound, ModelRef, UntrustedModel, get_model

SHIWU = str(Path(sys.executable).parent / "shiwu")
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def article_tensor(path) -> np.ndarray:
    """推理.py's preprocessing: Resize((224, 224)), ToTensor, Normalize — written out with PIL."""
    image = Image.open(path).convert("RGB")
    pixels = np.asarray(image.resize((224, 224), Image.Resampling.BILINEAR), dtype=np.float32) / 255.0
    return ((pixels - MEAN) / STD).transpose(2, 0, 1)


@pytest.fixture(scope="session")
def article(tmp_path_factory):
    """The reader's folder: the three model files, label_map.json, and the recipe's top-1s."""
    from efficientnet_lite_pytorch import EfficientNet

    folder = tmp_path_factory.mktemp("article")
    weights = get_model("efficientnet-lite0").weights_path()
    model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(weights)).eval()
    example = torch.zeros(1, 3, 224, 224)
    torch.save(model, folder / "model.pth")
    with torch.no_grad():
        torch.jit.trace(model, example).save(str(folder / "traced_model_cpu.pt"))
        # as a reader exports it: batch fixed at 1, the exporter's default names
        torch.onnx.export(model, (example,), str(folder / "model.onnx"), dynamo=False, opset_version=17)
    labels = LabelSet.imagenet()
    (folder / "label_map.json").write_text(
        json.dumps({str(i): name for i, name in enumerate(labels.zh)}, ensure_ascii=False), encoding="utf-8")
    with torch.no_grad():
        batch = torch.from_numpy(np.stack([article_tensor(p) for p in PHOTOS]))
        top1 = model(batch).argmax(1).tolist()
    return {"folder": folder, "model": model, "top1": dict(zip(PHOTOS, top1)),
            "labels": str(folder / "label_map.json")}


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


class TwoOutputs(torch.nn.Module):
    """A classifier whose forward returns more than the logits, as detection-style heads do."""

    def __init__(self, as_dict: bool):
        super().__init__()
        self.as_dict = as_dict
        self.features = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=4), torch.nn.ReLU())
        self.head = torch.nn.Linear(8, 5)

    def forward(self, x):
        maps = self.features(x)
        logits = self.head(maps.mean((2, 3)))
        return {"maps": maps, "logits": logits} if self.as_dict else (maps, logits)


@pytest.mark.parametrize("saved_as", ["torchscript tuple", "pickle dict"])
def test_the_first_output_of_shape_n_by_c_is_the_logits(tmp_path, saved_as):
    torch.manual_seed(0)
    net = TwoOutputs(as_dict=saved_as.endswith("dict")).eval()
    path = tmp_path / "two.pt"
    if saved_as.startswith("torchscript"):
        torch.jit.trace(net, torch.zeros(1, 3, 64, 64)).save(str(path))
    else:
        torch.save(net, path)  # the class lives in this test module, which is importable here
    batch = np.random.default_rng(1).standard_normal((3, 3, 224, 224), dtype=np.float32)
    with torch.no_grad():
        out = net(torch.from_numpy(batch))
    want = (out["logits"] if net.as_dict else out[1]).numpy()
    for backend in ("torch", "torchscript", "onnxruntime", "openvino"):
        recognizer = Recognizer(str(path), backend=backend, threads=2, trust_model_code=True)
        assert recognizer.spec.num_classes == 5
        assert np.abs(recognizer.logits(batch) - want).max() < 1e-4, backend


def test_a_torchscript_dict_output_runs_in_torch_and_says_why_not_in_onnx(tmp_path):
    net = TwoOutputs(as_dict=True).eval()
    path = tmp_path / "dict.pt"
    torch.jit.trace(net, torch.zeros(1, 3, 64, 64), strict=False).save(str(path))
    batch = np.zeros((1, 3, 224, 224), np.float32)
    with torch.no_grad():
        want = net(torch.from_numpy(batch))["logits"].numpy()
    assert np.abs(Recognizer(str(path), backend="torchscript").logits(batch) - want).max() < 1e-5
    with pytest.raises(BackendUnavailable, match="cannot be exported to ONNX.*--backend torch"):
        Recognizer(str(path), backend="onnxruntime")
    assert Recognizer(str(path), backend="auto").backend.name in ("torchscript", "torch")


def test_a_model_without_a_classifier_output_is_refused(tmp_path):
    path = tmp_path / "maps.pt"
    torch.jit.trace(torch.nn.Conv2d(3, 4, 3).eval(), torch.zeros(1, 3, 32, 32)).save(str(path))
    with pytest.raises(ModelNotFound, match=r"no output of shape \(batch, classes\)"):
        get_model(str(path))


class TinyViT(torch.nn.Module):
    """Patch embedding + nn.TransformerEncoder: the attention models the article calls ViT."""

    def __init__(self, size=64, patch=16, dim=64, classes=7):
        super().__init__()
        self.patches = torch.nn.Conv2d(3, dim, patch, stride=patch)
        self.cls = torch.nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.position = torch.nn.Parameter(torch.randn(1, (size // patch) ** 2 + 1, dim) * 0.02)
        layer = torch.nn.TransformerEncoderLayer(dim, nhead=4, dim_feedforward=128, batch_first=True,
                                                 activation="gelu", norm_first=True)
        self.encoder = torch.nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.norm = torch.nn.LayerNorm(dim)
        self.head = torch.nn.Linear(dim, classes)

    def forward(self, x):
        tokens = self.patches(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls.expand(len(x), -1, -1), tokens], 1) + self.position
        return self.head(self.norm(self.encoder(tokens))[:, 0])


def test_a_small_vit_runs_in_onnxruntime_and_openvino_equal_to_torch(tmp_path):
    torch.manual_seed(0)
    vit = TinyViT().eval()
    torch.save(vit, tmp_path / "vit.pth")  # TinyViT lives in this test module: importable here
    (tmp_path / "shiwu.json").write_text(json.dumps({"size": 64, "resize": "squash"}))
    batch = np.random.default_rng(2).standard_normal((4, 3, 64, 64), dtype=np.float32)
    with torch.no_grad():
        want = vit(torch.from_numpy(batch)).numpy()
    for backend in ("onnxruntime", "openvino", "torchscript"):
        # the folder: vit.pth + shiwu.json; len(x) in forward() makes the export batch-1 only
        recognizer = Recognizer(str(tmp_path), backend=backend, threads=2, trust_model_code=True)
        assert recognizer.preprocessing.size == 64 and recognizer.preprocessing.resize == "squash"
        assert np.abs(recognizer.logits(batch) - want).max() < 1e-4, backend


def test_a_vit_traced_with_fused_attention_says_how_to_export_it(tmp_path):
    vit = TinyViT().eval()
    with torch.no_grad():  # eval + no grad: the fused fast path is what gets traced
        torch.jit.trace(vit, torch.zeros(1, 3, 64, 64)).save(str(tmp_path / "vit.pt"))
    (tmp_path / "shiwu.json").write_text(json.dumps({"size": 64}))
    with pytest.raises(BackendUnavailable, match="set_fastpath_enabled"):
        Recognizer(str(tmp_path), backend="onnxruntime")
    batch = np.zeros((1, 3, 64, 64), np.float32)
    with torch.no_grad():
        want = vit(torch.from_numpy(batch)).numpy()
    assert np.abs(Recognizer(str(tmp_path), backend="torchscript").logits(batch) - want).max() < 1e-4


def test_export_writes_a_folder_that_runs_the_same_way_and_an_ir_only_openvino_reads(article, tmp_path, capsys):
    out = tmp_path / "ir" / "model.xml"
    assert main(["export", "--model", str(article["folder"] / "model.onnx"), "--labels", article["labels"],
                 "--resize", "squash", "--format", "openvino", "--out", str(out)]) == 0
    settings = json.loads((out.parent / "shiwu.json").read_text(encoding="utf-8"))
    assert settings["model"] == "model.xml" and settings["resize"] == "squash" and settings["size"] == 224
    assert np.allclose(settings["mean"], MEAN) and np.allclose(settings["std"], STD)
    # the recipe line prints the numbers as written, not float sums (57.120000000000005)
    assert "(pixel - (123.675, 116.28, 103.53)) / (58.395, 57.12, 57.375)" in capsys.readouterr().err
    recognizer = Recognizer(str(out.parent), backend="openvino", threads=2)  # no flags: shiwu.json says it all
    assert recognizer.model_name == "model.xml" and recognizer.preprocessing.resize == "squash"
    assert [r.predictions[0].index for r in recognizer.recognize(PHOTOS)] == [article["top1"][p] for p in PHOTOS]
    assert recognizer.predict(DATA / "coffee.jpg")[0].label == "浓缩咖啡"
    with pytest.raises(BackendUnavailable, match="use --backend openvino"):
        Recognizer(str(out.parent), backend="onnxruntime")


def test_a_changed_model_file_is_exported_again(tmp_path):
    path = tmp_path / "net.pt"
    batch = np.random.default_rng(3).standard_normal((2, 3, 64, 64), dtype=np.float32)
    exports, logits = [], []
    for seed in (0, 1):
        torch.manual_seed(seed)
        net = TwoOutputs(as_dict=False).eval()
        torch.jit.trace(net, torch.zeros(1, 3, 64, 64)).save(str(path))
        recognizer = Recognizer(str(path), backend="onnxruntime", size=64, threads=1)
        exports.append(recognizer.backend.model_path)
        logits.append(recognizer.logits(batch))
        with torch.no_grad():
            assert np.abs(logits[-1] - net(torch.from_numpy(batch))[1].numpy()).max() < 1e-4
    assert exports[0] != exports[1]  # the cache key has the file's content hash


def test_a_cached_onnx_user_model_starts_without_importing_torch(article):
    code = ("import sys; from shiwu import Recognizer; "
            f"r = Recognizer({str(article['folder'] / 'model.onnx')!r}, labels={article['labels']!r}, "
            "resize='squash', backend='onnxruntime', threads=1); "
            f"print(r.predict({str(DATA / 'coffee.jpg')!r})[0].label); "
            "print('torch' in sys.modules)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, encoding="utf-8",
                         timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["浓缩咖啡", "False"]


def test_batch_with_a_user_onnx_model_uses_its_preprocessing(article, tmp_path):
    out = tmp_path / "rows.jsonl"
    run = subprocess.run([SHIWU, "batch", str(DATA), "--out", str(out), "--model", str(article["folder"] / "model.onnx"),
                          "--labels", article["labels"], "--resize", "squash", "--backend", "onnxruntime",
                          "--threads", "1", "--workers", "1", "-q"],
                         capture_output=True, text=True, encoding="utf-8", timeout=600)
    assert run.returncode == 0, run.stderr
    rows = {Path(r["image"]).name: r for r in map(json.loads, out.read_text(encoding="utf-8").splitlines())}
    assert {name: r["predictions"][0]["index"] for name, r in rows.items()} == \
        {p.name: article["top1"][p] for p in PHOTOS}
    assert {r["model"] for r in rows.values()} == {"model.onnx"}


@pytest.mark.slow
def test_serve_with_a_user_onnx_model(article):
    import httpx

    from shiwu.server.process import ServerProcess

    args = ["--model", str(article["folder"] / "model.onnx"), "--labels", article["labels"],
            "--resize", "squash", "--backend", "onnxruntime", "--threads", "1", "--no-access-log",
            "--warmup-seconds", "0"]
    with ServerProcess(args) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        photo = DATA / "chelsea.jpg"
        answer = client.post("/v1/recognize", files=[("files", (photo.name, photo.read_bytes(), "image/jpeg"))])
        assert answer.status_code == 200, answer.text
        result = answer.json()["results"][0]
        assert result["model"] == "model.onnx"
        assert result["predictions"][0]["index"] == article["top1"][photo]
        assert result["predictions"][0]["label"] == LabelSet.imagenet().zh[article["top1"][photo]]


@pytest.mark.slow
def test_bench_prints_the_resolution_table_for_the_readers_model(article, tmp_path):
    out = tmp_path / "bench.json"
    run = subprocess.run([SHIWU, "bench", "--model", str(article["folder"] / "traced_model_cpu.pt"),
                          "--labels", article["labels"], "--resize", "squash", "--sizes", "224,168",
                          "--backends", "onnxruntime", "--batch", "1", "--threads", "1", "--seconds", "0.3",
                          "--views", "18", "--no-cold", "-q", "--json", str(out)],
                         capture_output=True, text=True, encoding="utf-8", timeout=900)
    assert run.returncode == 0, run.stderr
    report = json.loads(out.read_text(encoding="utf-8"))
    rows = {r["size"]: r for r in report["rows"]}
    assert report["model"] == "traced_model_cpu.pt" and set(rows) == {224, 168}
    assert rows[224]["agreement"] == 1.0  # onnxruntime fp32 at 224 vs the torch reference at 224
    assert 0 < rows[168]["ms_p50"] and rows[168]["peak_rss_mb"] > 0
    assert "| onnxruntime | fp32 | 168 |" in run.stdout


@pytest.mark.slow
def test_tune_saves_settings_per_model_file(article, tmp_path):
    import tomllib

    config = tmp_path / "config.toml"
    env = {**os.environ, "SHIWU_CONFIG": str(config)}
    model = article["folder"] / "model.onnx"
    run = subprocess.run([SHIWU, "tune", "--model", str(model), "--labels", article["labels"],
                          "--resize", "squash", "--backends", "onnxruntime", "--precision", "fp32",
                          "--sizes", "224", "--batch", "1", "--threads", "1", "--seconds", "0.3",
                          "--views", "18", "-q"],
                         capture_output=True, text=True, encoding="utf-8", timeout=900, env=env)
    assert run.returncode == 0, run.stderr
    tuned = tomllib.loads(config.read_text(encoding="utf-8"))["tuned"]
    assert tuned[str(model)]["backend"] == "onnxruntime"  # keyed by the file's absolute path
