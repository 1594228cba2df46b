"""The reader's own model beyond the article's three files: a forward that returns more than the
logits, a ViT in every runtime, `shiwu export`, a changed file exported again, and batch / serve /
bench / tune run on the reader's model (its folder: the `article` fixture, tests/models/conftest.py)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from support.article import MEAN, STD
from support.photos import DATA, PHOTOS

from shiwu import Recognizer
from shiwu.backends import BackendUnavailable
from shiwu.cli import main
from shiwu.labels import LabelSet
from shiwu.models.registry import ModelNotFound, get_model

SHIWU = str(Path(sys.executable).parent / "shiwu")


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
