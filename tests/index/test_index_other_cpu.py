"""An index stays searchable on another CPU. Built with onnxruntime int8 (what --precision auto
picks on an AVX-512 VNNI host), it records its runtime and precision; on a CPU without VNNI
(simulated by taking the flags out of shiwu.cpu.cpu_flags), search and index make their vectors
the same way, with one line saying so. A setting this machine cannot run (OpenVINO bf16 without
bf16 instructions, a runtime that is not installed) is one line naming the index, exit 2; an
explicit --backend that contradicts the index is refused."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from support.photos import PHOTOS

from shiwu import cpu
from shiwu.cli import main
from shiwu.index import IndexRow, Manifest, create_index, open_index
from shiwu.indexing import preprocessing_identity
from shiwu.models.registry import get_model

pytestmark = pytest.mark.slow  # a real model quantized, indexes built and searched

SHIWU = str(Path(sys.executable).parent / "shiwu")
REDUCED = {"avx512_vnni", "avx_vnni", "amx_int8", "avx512_bf16", "amx_bf16", "amx_tile"}
FOLLOWED = "vectors for it are made the same way here"


def shiwu(*args, env=None):
    return subprocess.run([SHIWU, *map(str, args)], capture_output=True, text=True, encoding="utf-8",
                          timeout=900, env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def int8_index(tmp_path_factory):
    """Three photos indexed with onnxruntime int8 at the model's size."""
    folder = tmp_path_factory.mktemp("int8-index")
    photos = folder / "photos"
    photos.mkdir()
    for path in PHOTOS[:3]:
        (photos / path.name).write_bytes(path.read_bytes())
    run = shiwu("index", photos, "--out", folder / "index", "--backend", "onnxruntime", "--precision", "int8",
                "--threads", "1", "-q", "--workers", "0")
    assert run.returncode == 0, run.stderr
    return photos, folder / "index"


@pytest.fixture
def laptop(monkeypatch):
    """This process's CPU as one without VNNI, AMX or bf16, and the default precision auto."""
    flags = cpu.cpu_flags() - REDUCED
    monkeypatch.setattr(cpu, "cpu_flags", lambda: flags)
    monkeypatch.setenv("SHIWU_PRECISION", "auto")


def search_here(capfd, *args) -> tuple[int, list[dict], str]:
    code = main(["search", *map(str, args), "--json", "--threads", "1"])
    out, err = capfd.readouterr()
    return code, [json.loads(line) for line in out.splitlines()], err


def test_the_manifest_records_the_runtime_beside_the_precision(int8_index):
    _, index = int8_index
    manifest = json.loads((index / "manifest.json").read_text(encoding="utf-8"))
    assert (manifest["backend"], manifest["precision"]) == ("onnxruntime", "int8")


def test_an_int8_index_made_with_another_recipe_says_its_vectors_are_close_not_equal(int8_index, tmp_path,
                                                                                     monkeypatch, capfd):
    """The quantizer recipe changes between shiwu versions (INT8_RECIPES): an index made with an
    older one still answers, with one line saying that the vectors made now are not its own."""
    import shutil

    from shiwu.backends.runtimes import INT8_RECIPES

    monkeypatch.setenv("SHIWU_PRECISION", "auto")
    photos, index = int8_index
    manifest = json.loads((index / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["int8_recipe"] == INT8_RECIPES["onnxruntime"]
    older = tmp_path / "older"
    shutil.copytree(index, older)
    (older / "manifest.json").write_text(json.dumps({**manifest, "int8_recipe": "qdq-w8-old-v1"}), encoding="utf-8")
    query = photos / PHOTOS[0].name
    code, (result,), err = search_here(capfd, query, "--index", older)
    assert code == 0, err
    notes = [line for line in err.splitlines() if "qdq-w8-old-v1" in line]
    assert len(notes) == 1 and INT8_RECIPES["onnxruntime"] in notes[0] and "not equal" in notes[0], err
    assert Path(result["matches"][0]["image"]).name == PHOTOS[0].name
    code, _, err = search_here(capfd, query, "--index", index)     # its own recipe: no such line
    assert code == 0 and "recipe" not in err, err


def test_search_on_a_cpu_without_vnni_makes_int8_vectors_as_the_index_says(int8_index, laptop, capfd):
    from shiwu.backends.runtimes import cpu_lacks

    assert cpu_lacks("int8", cpu.cpu_flags())  # the simulated laptop: auto alone would not run int8
    photos, index = int8_index
    query = photos / PHOTOS[0].name
    code, (result,), err = search_here(capfd, query, "--index", index)
    assert code == 0, err
    notes = [line for line in err.splitlines() if FOLLOWED in line]
    assert len(notes) == 1 and str(index) in notes[0] and "onnxruntime int8" in notes[0], err
    assert "Traceback" not in err
    best = result["matches"][0]
    # the same int8 vectors as the index's: the photo finds itself at cosine 1 (fp32 query
    # vectors of an int8 index would not: test_fp32_queries_would_not_match_exactly)
    assert Path(best["image"]).name == query.name and best["score"] > 0.99995


def test_fp32_queries_would_not_match_exactly(int8_index):
    """What the test above rules out: the fp32 vector of a photo is not its int8 vector."""
    from shiwu import Recognizer

    photos, index = int8_index
    query = photos / PHOTOS[0].name
    fp32 = Recognizer(backend="onnxruntime", precision="fp32", threads=1).embed([query])
    with open_index(index) as opened:
        score, row = opened.search(fp32, 1)[0][0]
    assert Path(row.path).name == query.name and score < 0.9999


def test_adding_photos_on_a_cpu_without_vnni_keeps_the_index_int8(int8_index, laptop, capfd, tmp_path):
    photos, index = int8_index
    extra = tmp_path / PHOTOS[3].name
    extra.write_bytes(PHOTOS[3].read_bytes())
    code = main(["index", str(extra), "--out", str(index), "--workers", "0", "--threads", "1"])
    _, err = capfd.readouterr()
    assert code == 0, err
    assert sum(FOLLOWED in line for line in err.splitlines()) == 1 and "onnxruntime int8" in err
    manifest = json.loads((index / "manifest.json").read_text(encoding="utf-8"))
    assert (manifest["backend"], manifest["precision"], manifest["counts"]["rows"]) == ("onnxruntime", "int8", 4)
    code, (result,), err = search_here(capfd, extra, "--index", index)
    assert code == 0 and result["matches"][0]["score"] > 0.99995, err


def test_a_tuned_runtime_does_not_change_the_index_vectors(int8_index, tmp_path):
    """`shiwu tune` on the laptop chose openvino: the index's queries are still onnxruntime's."""
    photos, index = int8_index
    config = tmp_path / "config.toml"
    config.write_text('[tuned."efficientnet-lite0"]\nbackend = "openvino"\nprecision = "fp32"\n', encoding="utf-8")
    run = shiwu("search", photos / PHOTOS[1].name, "--index", index, "--json", "--threads", "1",
                env={"SHIWU_CONFIG": str(config)})
    assert run.returncode == 0, run.stderr
    best = json.loads(run.stdout)["matches"][0]
    assert Path(best["image"]).name == PHOTOS[1].name and best["score"] > 0.99995


def test_an_explicit_backend_that_contradicts_the_index_is_refused(int8_index):
    photos, index = int8_index
    run = shiwu("search", photos / PHOTOS[0].name, "--index", index, "--backend", "openvino")
    assert run.returncode == 2
    (line,) = run.stderr.strip().splitlines()
    assert str(index) in line and "onnxruntime int8: --backend openvino would make other int8 vectors" in line
    run = shiwu("search", photos / PHOTOS[0].name, "--index", index, "--precision", "fp32")
    assert run.returncode == 2 and "precision int8, not fp32" in run.stderr and "Traceback" not in run.stderr


def manifest_of(backend: str, precision: str) -> Manifest:
    """The manifest of a Lite0 index made with ``backend`` ``precision``."""
    spec = get_model("efficientnet-lite0")
    return Manifest(model=spec.key, dimension=1280, weights_hash=spec.fingerprint(),
                    model_ref={"name": "efficientnet-lite0"},
                    preprocessing=preprocessing_identity(spec.preprocessing), precision=precision,
                    backend=backend)


def made_elsewhere(folder: Path, backend: str, precision: str) -> Path:
    """A real index whose manifest says another machine made it with ``backend`` ``precision``
    (its one row's vector is any unit vector: these tests stop before searching)."""
    spec = get_model("efficientnet-lite0")
    with create_index(folder, manifest_of(backend, precision)) as index:
        vector = np.ones((1, 1280), np.float32) / np.sqrt(1280)
        index.upsert([IndexRow.for_file(PHOTOS[0], model=spec.key, label="猫", score=0.5)], [vector[0]])
        index.flush()
    return folder


def test_an_index_made_with_openvino_bf16_is_refused_on_a_cpu_without_bf16(tmp_path, laptop, capfd):
    index = made_elsewhere(tmp_path / "bf16", "openvino", "bf16")
    code, results, err = search_here(capfd, PHOTOS[0], "--index", index)
    assert code == 2 and results == []
    (line,) = err.strip().splitlines()
    assert line.startswith("shiwu: error: index ") and str(index) in line
    assert "openvino bf16, which cannot run here: this CPU has no AVX-512 BF16 or AMX instructions" in line
    code = main(["index", str(PHOTOS[1]), "--out", str(index), "--workers", "0", "-q"])
    (line,) = capfd.readouterr().err.strip().splitlines()
    assert code == 2 and "cannot run here" in line


def test_an_index_made_with_a_runtime_not_installed_here_is_one_line(tmp_path):
    from shiwu.server.process import free_port

    index = made_elsewhere(tmp_path / "ipex", "ipex", "bf16")
    for command in (["search", PHOTOS[0], "--index", index], ["serve", "--index", index, "--port", free_port()]):
        run = shiwu(*command)
        assert run.returncode == 2, run.stderr
        (line,) = run.stderr.strip().splitlines()
        assert str(index) in line and "ipex is not installed here" in line and "Traceback" not in run.stderr


def test_serve_makes_its_vectors_as_the_index_says(int8_index):
    """The server's default precision (fp32 in these tests, auto elsewhere) is not the index's:
    it runs the index's onnxruntime int8 instead of refusing the index."""
    import httpx

    from shiwu.server.process import ServerProcess

    photos, index = int8_index
    args = ["--threads", "1", "--max-batch-size", "1", "--warmup-seconds", "0", "--no-access-log"]
    with ServerProcess([*args, "--index", str(index)]) as server:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            with open(photos / PHOTOS[2].name, "rb") as f:
                response = client.post("/v1/search", files=[("files", (PHOTOS[2].name, f.read(), "image/jpeg"))])
    assert response.status_code == 200, response.text
    best = response.json()["results"][0]["matches"][0]
    assert Path(best["image"]).name == PHOTOS[2].name and best["score"] > 0.99995


def test_an_openvino_int8_index_on_a_cpu_without_vnni_says_its_vectors_are_close_not_equal(laptop):
    """OpenVINO has no unfused way to run int8: without VNNI its kernels round otherwise, and the
    note says so instead of promising the same vectors."""
    from shiwu.index.made_with import follow

    made = {backend: follow(manifest_of(backend, "int8"), "照片索引") for backend in ("openvino", "onnxruntime")}
    assert (made["openvino"].backend, made["openvino"].precision) == ("openvino", "int8")
    assert "close to its vector in the index, not equal" in made["openvino"].note
    assert FOLLOWED in made["onnxruntime"].note and "not equal" not in made["onnxruntime"].note
