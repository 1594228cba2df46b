"""The installed `shiwu` command, run as a user runs it: a real subprocess."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from support.bad_images import BAD_FILES, make_bad_files
from support.photos import CAT_CLASSES, DATA

SHIWU = Path(sys.executable).parent / "shiwu"


def shiwu(*args, env=None):
    return subprocess.run([str(SHIWU), *map(str, args)], capture_output=True, text=True,
                          encoding="utf-8", timeout=300, env=env)


def test_predict_prints_a_chinese_table():
    run = shiwu("predict", DATA / "coffee.jpg", DATA / "chelsea.jpg", "--topk", "3", "--threads", "1")
    assert run.returncode == 0, run.stderr
    blocks = run.stdout.strip().split("\n" + str(DATA / "chelsea.jpg"))
    assert blocks[0].startswith(str(DATA / "coffee.jpg"))
    first = blocks[0].splitlines()[1]
    assert "1. 浓缩咖啡" in first and "%" in first and "espresso" in first
    assert len(run.stdout.strip().splitlines()) == 8  # two headers, three labels each
    assert "猫" in blocks[1].splitlines()[1]


@pytest.mark.slow
def test_predict_json_lines_follow_the_contract():
    run = shiwu("predict", "--json", "-k", "2", DATA / "chelsea.png", DATA / "coffee.jpg")
    assert run.returncode == 0, run.stderr
    rows = [json.loads(line) for line in run.stdout.splitlines()]
    assert [Path(r["image"]).name for r in rows] == ["chelsea.png", "coffee.jpg"]
    assert rows[0]["predictions"][0]["index"] in CAT_CLASSES
    assert rows[1]["predictions"][0] == {**rows[1]["predictions"][0], "label": "浓缩咖啡", "index": 967}
    for row in rows:
        assert set(row) == {"image", "predictions", "model", "backend", "precision", "error"}
        assert len(row["predictions"]) == 2 and row["error"] is None
        assert 0 < row["predictions"][1]["score"] <= row["predictions"][0]["score"] <= 1



def test_predict_says_when_topk_is_more_than_the_classes():
    run = shiwu("predict", "--json", "--topk", "5000", "--threads", "1", DATA / "coffee.jpg")
    assert run.returncode == 0, run.stderr
    assert "--topk 5000 is more than the 1000 classes of efficientnet-lite0; printing 1000" in run.stderr
    assert len(json.loads(run.stdout)["predictions"]) == 1000

def test_each_bad_file_gets_one_line_and_the_good_ones_still_run(tmp_path):
    bad = make_bad_files(tmp_path)
    # --quiet: progress notes (a first run measures backends, exports) are not error lines
    run = shiwu("predict", "--quiet", "--json", DATA / "coffee.jpg", *bad, DATA / "chelsea.jpg")
    assert run.returncode == 1
    rows = [json.loads(line) for line in run.stdout.splitlines()]
    assert len(rows) == len(bad) + 2
    assert rows[0]["predictions"][0]["label"] == "浓缩咖啡"
    assert rows[-1]["predictions"][0]["index"] in CAT_CLASSES
    errors = [line for line in run.stderr.splitlines() if "images failed" not in line]
    assert len(errors) == len(bad)
    for path, row, line in zip(bad, rows[1:-1], errors):
        reason = BAD_FILES[path.name][0]
        assert row["predictions"] == [] and row["error"]["type"] == "ImageError"
        assert reason in row["error"]["message"]
        assert str(path) in line and reason in line
    assert f"{len(bad)} of {len(bad) + 2} images failed" in run.stderr


@pytest.mark.parametrize("args", [
    [],
    ["predict"],
    ["predict", "--topk", "0", "x.jpg"],
    ["predict", "--size", "4", "x.jpg"],
    ["predict", "--backend", "gpu", "x.jpg"],
    ["predict", "--model", "no-such-model", "x.jpg"],
])
def test_usage_errors_exit_2(args):
    run = shiwu(*args)
    assert run.returncode == 2, (args, run.stdout, run.stderr)
    assert run.stderr.strip()


def test_bench_names_the_images_option_it_could_not_read(tmp_path):
    run = shiwu("bench", "--images", tmp_path / "4", "--seconds", "1")  # it said "calibration folder"
    assert run.returncode == 2 and run.stderr.splitlines() == [
        f"shiwu: error: --images folder {tmp_path / '4'} does not exist"], run.stderr


@pytest.mark.parametrize("args, message", [
    ([], "give photos (PATH...) or --index INDEX"),
    ([DATA, "--index", "idx"], "give photos (PATH...) or --index INDEX, not both"),
])
def test_dedupe_says_what_it_needs(args, message):
    # with nothing given it said "..., not both"
    run = shiwu("dedupe", *args)
    assert run.returncode == 2 and run.stderr.splitlines() == [f"shiwu: error: {message}"], run.stderr


def test_dedupe_of_a_folder_without_photos_says_so_in_every_tier(tmp_path):
    for tier in ("exact", "near"):  # no model for these: they said "0 groups", exit 0
        run = shiwu("dedupe", tmp_path, "--tier", tier)
        assert run.returncode == 2 and run.stderr.splitlines() == [
            f"shiwu: error: no images found in {tmp_path}"], run.stderr


def test_works_with_an_ascii_locale():
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONIOENCODING": "ascii"}
    run = subprocess.run([str(SHIWU), "predict", str(DATA / "coffee.jpg"), "-k", "1"],
                         capture_output=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "浓缩咖啡" in run.stdout.decode("utf-8")


@pytest.mark.slow
def test_doctor_reports_cpu_features_and_backends():
    run = shiwu("doctor", "--json")
    assert run.returncode == 0, run.stderr
    info = json.loads(run.stdout)
    assert info["device"] == "CPU"
    assert set(info["cpu_features"]) >= {"AVX2", "AVX-512", "AVX-512 VNNI", "AVX-512 BF16", "AMX"}
    assert info["backends"]["torch"]["available"] is True
    assert info["threads"]["torch_intra_op"] >= 1
    assert info["backends"]["ipex"]["available"] or "2.8" in info["backends"]["ipex"]["note"]
    from shiwu.backends.runtimes import cpu_lacks
    from shiwu.cpu import cpu_flags

    vnni = cpu_lacks("int8", cpu_flags()) is None
    int8 = info["reduced_precision"]["int8"]
    assert ("native" in int8) is vnni and ("unfused" in int8) is (not vnni), int8
    assert ("native" in info["reduced_precision"]["bf16"]) is (cpu_lacks("bf16", cpu_flags()) is None)
    text = shiwu("doctor").stdout
    assert "AVX-512" in text and "backends:" in text and f"int8:            {int8}" in text


def test_models_lists_weights_presence():
    run = shiwu("models", "--json")
    rows = {r["name"]: r for r in json.loads(run.stdout)}
    assert rows["efficientnet-lite0"]["weights_installed"] is True
    assert rows["efficientnet-lite0"]["classes"] == 1000
    lines = [line for line in shiwu("models").stdout.splitlines() if " classes " in line]
    assert lines[0].startswith("efficientnet-lite0 ")
    assert len({line.index(" classes ") for line in lines}) == 1  # one column, long ModelScope names too


# Packages of the optional extras (serve, clip, index, milvus, ray, parquet, int8, plot) and the
# test references: `pip install shiwu` has none of them.
EXTRA_MODULES = ("tokenizers", "faiss", "scipy", "fastapi", "starlette", "uvicorn", "multipart",
                 "prometheus_client", "ray", "pyarrow", "pymilvus", "milvus_lite", "nncf",
                 "matplotlib", "modelscope", "cn_clip", "hypothesis", "httpx")


def test_the_run_command_works_with_no_extra_installed():
    """README's first command installs shiwu without extras: no module of an extra may be
    imported on the way to a prediction (this broke once: a model source imported the CLIP
    tokenizer, which needs `tokenizers`)."""
    blocker = (
        "import sys, importlib.abc\n"
        f"blocked = set({EXTRA_MODULES!r})\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in blocked:\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from shiwu.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n")
    examples = Path(__file__).resolve().parents[2] / "examples"
    run = subprocess.run([sys.executable, "-c", blocker, "predict", str(examples / "猫.jpg"),
                          str(examples / "咖啡.jpg"), "--json"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    cat, coffee = [json.loads(line) for line in run.stdout.splitlines()]
    assert cat["predictions"][0]["index"] in CAT_CLASSES and coffee["error"] is None


def test_chinese_clip_without_its_extra_says_what_to_install(tmp_path):
    from shiwu.models.synthetic_clip import main as write_synthetic

    blocker = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'tokenizers':\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from shiwu.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n")
    assert write_synthetic([str(tmp_path / "clip"), "--small"]) == 0
    run = subprocess.run([sys.executable, "-c", blocker, "predict", str(DATA / "coffee.jpg"), "--model",
                          str(tmp_path / "clip"), "--labels", "猫,狗"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    assert 'pip install "shiwu[clip]"' in run.stderr and "tokenizers" in run.stderr
