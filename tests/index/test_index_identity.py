"""An index's identity includes everything that changes a vector: the input size and the rest of
the preprocessing, and the precision. Vectors made another way are refused with one line, and
search embeds its query photos as the index's were (a tuned size does not silently change them)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # real model runs in subprocesses

from support.photos import PHOTOS

SHIWU = str(Path(sys.executable).parent / "shiwu")
FAST = ["--backend", "torch", "--threads", "1", "-q", "--workers", "0"]


def shiwu(*args, env=None, timeout=600):
    return subprocess.run([SHIWU, *map(str, args)], capture_output=True, text=True, encoding="utf-8",
                          timeout=timeout, env=env)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    folder = tmp_path_factory.mktemp("identity")
    photos = folder / "photos"
    photos.mkdir()
    for path in PHOTOS[:3]:
        (photos / path.name).write_bytes(path.read_bytes())
    index = folder / "index"
    run = shiwu("index", photos, "--out", index, *FAST)
    assert run.returncode == 0, run.stderr
    return photos, index


@pytest.mark.slow
def test_the_manifest_records_size_preprocessing_and_precision(built):
    _, index = built
    manifest = json.loads((index / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["preprocessing"]["size"] == 224 and manifest["preprocessing"]["resize"] == "crop"
    assert len(manifest["preprocessing"]["mean"]) == 3 and manifest["precision"] == "fp32"


def test_adding_vectors_of_another_size_is_refused_with_one_line(built, tmp_path):
    photos, index = built
    extra = tmp_path / "extra.jpg"
    extra.write_bytes(PHOTOS[3].read_bytes())
    run = shiwu("index", extra, "--out", index, "--size", "96", *FAST)
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "input size 224, not 96" in lines[0] and "Traceback" not in run.stderr
    rows = json.loads((index / "manifest.json").read_text(encoding="utf-8"))["counts"]["rows"]
    assert rows == 3  # nothing was added


@pytest.mark.slow
def test_search_embeds_queries_at_the_index_size_whatever_was_tuned(built, tmp_path):
    photos, index = built
    config = tmp_path / "config.toml"
    config.write_text('[tuned."efficientnet-lite0"]\nsize = 96\n', encoding="utf-8")
    env = {**os.environ, "SHIWU_CONFIG": str(config)}
    query = photos / PHOTOS[0].name
    run = shiwu("search", query, "--index", index, "--json", "--backend", "torch", "--threads", "1", env=env)
    assert run.returncode == 0, run.stderr
    (result,) = [json.loads(line) for line in run.stdout.splitlines()]
    best = result["matches"][0]
    assert Path(best["image"]).name == PHOTOS[0].name and best["score"] > 0.999


def test_search_at_another_precision_than_the_index_is_refused(built):
    photos, index = built
    run = shiwu("search", photos / PHOTOS[0].name, "--index", index, "--precision", "bf16",
                "--backend", "torch", "--threads", "1")
    assert run.returncode == 2, run.stderr
    assert "precision fp32, not bf16" in run.stderr and "Traceback" not in run.stderr
