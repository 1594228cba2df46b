"""`shiwu index / search / dedupe` as a user runs them, on real photos and their edited copies."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from support.index_helpers import FAST, SHIWU, shiwu
from support.photos import photo_library

from shiwu import Recognizer
from shiwu.cli import main
from shiwu.index import open_index



@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """The real photos, a resized + recompressed and a brightened copy of coffee, one broken file."""
    return photo_library(tmp_path_factory.mktemp("photos"))


@pytest.mark.slow
def test_index_then_search_finds_the_copies_first(photos, tmp_path):
    out = tmp_path / "索引"
    run = shiwu("index", photos, "--out", out, "--json", *FAST)
    assert run.returncode == 1, run.stderr  # one file is broken: its row says so
    summary = json.loads(run.stdout)
    assert summary["done"] == summary["total"] == len(list(photos.iterdir()))
    assert summary["failed"] == 1 and summary["rows"] == summary["total"]
    from shiwu.indexing import IndexSummary

    line = IndexSummary(**{k: v for k, v in summary.items() if k in IndexSummary.__dataclass_fields__
                           and k != "failures"}).format()
    assert f"{summary['done'] - 1} embedded, 1 failed," in line  # the failed one is not counted as embedded
    with open_index(out) as index:
        rows = {Path(r.path).name: r for r in index.all_rows()}
        assert rows["坏的.jpg"].error_type == "ImageError" and rows["coffee.jpg"].label == "浓缩咖啡"
        assert index.manifest.dimension == 1280 and index.manifest.model == "efficientnet-lite0"

    run = shiwu("search", photos / "coffee.jpg", "--index", out, "--topk", "3", "--json", "--backend", "onnxruntime")
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    names = [Path(m["image"]).name for m in result["matches"]]
    assert names[0] == "coffee.jpg" and set(names[1:]) == {"咖啡 小.jpg", "coffee_bright.jpg"}
    assert result["error"] is None and result["matches"][1]["label"] == "浓缩咖啡"
    assert 0.7 < result["matches"][2]["score"] <= result["matches"][1]["score"] <= 1.0001

    run = shiwu("search", photos / "missing.jpg", "--index", out, "--json", "--backend", "onnxruntime")
    assert run.returncode == 1 and json.loads(run.stdout)["error"]["type"] == "ImageError"


@pytest.mark.slow
def test_rerunning_adds_new_files_prunes_vanished_ones_and_skips_the_rest(photos, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("coffee.jpg", "chelsea.jpg", "rocket.jpg"):
        (folder / name).write_bytes((photos / name).read_bytes())
    out = tmp_path / "index"
    assert shiwu("index", folder, "--out", out, *FAST).returncode == 0
    (folder / "astronaut.jpg").write_bytes((photos / "astronaut.jpg").read_bytes())
    (folder / "rocket.jpg").unlink()
    run = shiwu("index", folder, "--out", out, "--prune", "--json", *FAST)
    summary = json.loads(run.stdout)
    assert (summary["done"], summary["up_to_date"], summary["pruned"], summary["rows"]) == (1, 2, 1, 3)
    # the same files spelled another way are the same rows
    run = shiwu("index", str(folder.resolve()) + "/./", "--out", out, "--json", *FAST)
    assert json.loads(run.stdout)["done"] == 0


@pytest.mark.slow
def test_another_models_index_is_refused(photos, tmp_path, capsys):
    out = tmp_path / "index"
    assert main(["index", str(photos / "coffee.jpg"), "--out", str(out), *FAST]) == 0
    code = main(["index", str(photos / "chelsea.jpg"), "--out", str(out), "--model", "efficientnet-lite2", *FAST])
    assert code == 2 and "was built with" in capsys.readouterr().err


@pytest.mark.slow
def test_kill_9_mid_index_then_run_again_leaves_every_file_once(tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(160):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")
    out = tmp_path / "index"
    process = subprocess.Popen([SHIWU, "index", str(folder), "--out", str(out), "--batch-size", "8",
                                "--backend", "torch", "--threads", "1", "--workers", "1", "-q"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            with open_index(out) as index:
                if len(index) >= 16:
                    break
        except Exception:  # noqa: BLE001 - not created yet
            pass
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    with open_index(out) as index:
        assert 16 <= len(index) < 160
    # --resume, as a user would type it after a crash (every index run only adds what is missing)
    run = shiwu("index", folder, "--out", out, "--resume", "--json", "--backend", "torch",
                "--threads", "1", "-q")
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary["up_to_date"] >= 16 and summary["up_to_date"] + summary["done"] == 160, summary
    with open_index(out) as index:
        paths = [row.real_path for row in index.all_rows()]
        assert len(paths) == len(set(paths)) == 160
        scores, ids = index.search_ids(next(index.iter_vectors())[1][:1], 1)
        assert scores[0, 0] > 0.999


def _index_size_limit():
    import resource

    limit = 100 * 1024  # the table and vector file outgrow it after a few batches of 4
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


@pytest.mark.slow
def test_a_full_disk_mid_index_is_one_line_and_the_next_run_completes(tmp_path):
    from support.batch import small_photos

    photos = small_photos(tmp_path / "many", 40)
    out = tmp_path / "index"
    args = ["index", tmp_path / "many", "--out", out, "--batch-size", "4", "--workers", "0",
            "--backend", "torch", "--threads", "1", "-q"]
    full = subprocess.run([SHIWU, *map(str, args)], capture_output=True, text=True, timeout=300,
                          preexec_fn=_index_size_limit)
    assert full.returncode == 3, full.stderr
    lines = full.stderr.strip().splitlines()
    assert len(lines) == 1 and f"cannot write the index {out}" in lines[0], lines
    with open_index(out) as index:  # what was stored is a loadable index, whole batches
        stored = [row.real_path for row in index.all_rows()]
        assert len(stored) == len(set(stored)) < len(photos) and len(stored) % 4 == 0
    again = shiwu(*args, "--json")
    assert again.returncode == 0, again.stderr
    with open_index(out) as index:
        paths = [row.real_path for row in index.all_rows()]
        assert sorted(paths) == sorted(str(p) for p in photos)  # each once
        scores, _ = index.search_ids(next(index.iter_vectors())[1][:1], 1)
        assert scores[0, 0] > 0.999
    assert not [p.name for p in out.iterdir() if p.name.startswith(".tmp")]


@pytest.mark.slow
def test_dedupe_groups_the_copies_of_a_folder(photos, tmp_path):
    csv_file = tmp_path / "groups.csv"
    run = shiwu("dedupe", photos, "--json", "--csv", csv_file, "--threshold", "0.8", *FAST)
    assert run.returncode == 0, run.stderr
    groups = [[Path(p).name for p in g] for g in json.loads(run.stdout)["groups"]]
    coffee = next(g for g in groups if "coffee.jpg" in g)
    assert coffee[0] == "coffee.jpg"  # the largest file represents the group
    assert set(coffee) == {"coffee.jpg", "咖啡 小.jpg", "coffee_bright.jpg"}
    assert all("rocket.jpg" not in g for g in groups)
    lines = csv_file.read_text(encoding="utf-8-sig").splitlines()
    assert lines[0] == "group,image,representative,size,tier,match" and any("咖啡 小.jpg,no" in line for line in lines)


@pytest.mark.milvus
@pytest.mark.slow
def test_the_same_index_in_milvus(photos, tmp_path):
    store = tmp_path / "milvus.db"
    run = shiwu("index", photos / "coffee.jpg", photos / "咖啡 小.jpg", photos / "rocket.jpg",
                "--store", store, "--json", *FAST)
    assert run.returncode == 0, run.stderr
    run = shiwu("search", photos / "coffee_bright.jpg", "--index", store, "--json", "--backend", "onnxruntime")
    assert run.returncode == 0, run.stderr
    names = [Path(m["image"]).name for m in json.loads(run.stdout)["matches"]]
    assert names[:2] == ["coffee.jpg", "咖啡 小.jpg"] and names[2] == "rocket.jpg"


@pytest.mark.slow
def test_text_search_needs_a_chinese_clip_index_and_works_with_one(photos, tmp_path, clip_dir, capsys):
    lite = tmp_path / "lite"
    assert main(["index", str(photos / "coffee.jpg"), "--out", str(lite), *FAST]) == 0
    assert main(["search", "--index", str(lite), "--text", "海边的日落"]) == 2
    assert "Chinese-CLIP" in capsys.readouterr().err

    model = clip_dir("ViT-B-16")
    index = tmp_path / "clip"
    assert main(["index", str(photos / "coffee.jpg"), str(photos / "rocket.jpg"), str(photos / "chelsea.jpg"),
                 "--out", str(index), "--model", str(model), *FAST]) == 0
    capsys.readouterr()
    assert main(["search", "--index", str(index), "--text", "一张猫的照片", "--json", "-k", "3"]) == 0
    result = json.loads(capsys.readouterr().out)
    # the answer is the text embedding's own ranking of the indexed image embeddings
    recognizer = Recognizer(str(model), backend="onnxruntime")
    images = recognizer.embed([photos / n for n in ("coffee.jpg", "rocket.jpg", "chelsea.jpg")])
    text = recognizer.spec.text_encoder(["一张猫的照片"])[0]
    want = [("coffee.jpg", "rocket.jpg", "chelsea.jpg")[i] for i in np.argsort(-(images @ text))]
    assert result["text"] == "一张猫的照片" and [Path(m["image"]).name for m in result["matches"]] == want
    assert np.allclose([m["score"] for m in result["matches"]], np.sort(images @ text)[::-1], atol=1e-4)
