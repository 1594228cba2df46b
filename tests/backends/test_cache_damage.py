"""Read-only or damaged caches (issue 20, item 9): shiwu runs without caching (one warning) when
the cache cannot be written, and rebuilds what is damaged — never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from support.tiny_models import red_and_blue

SHIWU = str(Path(sys.executable).parent / "shiwu")


@pytest.fixture
def model_and_photos(tmp_path):
    model = red_and_blue(tmp_path / "model" / "model.onnx", red_first=True)
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (64, 64), (250, 10, 10)).save(photos / "red.png")
    Image.new("RGB", (64, 64), (10, 10, 250)).save(photos / "blue.png")
    return model, photos


def shiwu(*args, env: dict, wrap: list[str] | None = None) -> subprocess.CompletedProcess:
    command = (wrap or []) + [SHIWU, *map(str, args)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env={**os.environ, **env})
    assert "Traceback" not in done.stderr, done.stderr
    return done


def commands(model: Path, photos: Path, work: Path) -> list[list]:
    """predict, batch, index and search: every command that reads the cache."""
    common = ["--model", model, "-b", "onnxruntime"]
    work.mkdir(exist_ok=True)
    return [["predict", photos / "red.png", *common, "--json"],
            ["batch", photos, "--out", work / "rows.jsonl", "--topk", "2", *common],
            ["index", photos, "--store", work / "index", *common],
            ["search", "--index", work / "index", photos / "red.png", "--json"]]


def read_only(folder: Path) -> list[str]:
    """A command prefix that runs with ``folder`` read-only: a read-only bind mount in a private
    mount namespace as root (root writes through permissions), else the permissions."""
    if os.geteuid() == 0:
        return ["unshare", "-m", "sh", "-c", f"mount --bind -o ro '{folder}' '{folder}' && exec \"$@\"", "sh"]
    for path in [folder, *folder.rglob("*")]:
        path.chmod(path.stat().st_mode & ~0o222)
    return []


@pytest.mark.slow
def test_a_read_only_warm_cache_runs_every_command_with_one_warning(model_and_photos, tmp_path):
    model, photos = model_and_photos
    cache = tmp_path / "cache"
    env = {"SHIWU_CACHE": str(cache)}
    warm = tmp_path / "warm"
    for args in commands(model, photos, warm):
        assert shiwu(*args, env=env).returncode == 0
    wrap = read_only(cache)
    work = tmp_path / "work"
    for args in commands(model, photos, work):
        done = shiwu(*args, env=env, wrap=wrap)
        assert done.returncode == 0, (args[0], done.stderr)
        warnings = [line for line in done.stderr.splitlines() if "warning:" in line]
        assert len(warnings) == 1 and "cannot be written" in warnings[0], (args[0], done.stderr)
    assert json.loads(shiwu(*commands(model, photos, work)[0], env=env, wrap=wrap).stdout)["predictions"][0][
        "label"] == "红"


@pytest.mark.slow
def test_a_warm_cache_on_a_read_only_file_system_is_read_not_made_again(tmp_path):
    """A cache baked into a container image run with a read-only root file system: its exports,
    its --backend auto choice and its fingerprints are used, nothing is exported or timed again
    (before, every start in such a container exported and timed anew in a temporary folder)."""
    cache = tmp_path / "cache"
    env = {"SHIWU_CACHE": str(cache)}
    photo = Path(__file__).parents[1] / "data" / "coffee.jpg"
    warm = shiwu("predict", photo, "--json", "-v", env=env)
    assert warm.returncode == 0 and "measuring backends" in warm.stderr, warm.stderr
    wrap = read_only(cache)
    done = shiwu("predict", photo, "--json", "-v", env=env, wrap=wrap)
    assert done.returncode == 0, done.stderr
    assert "measuring backends" not in done.stderr and "exporting" not in done.stderr, done.stderr
    warnings = [line for line in done.stderr.splitlines() if "warning:" in line]
    assert len(warnings) == 1 and "what it holds is read" in warnings[0], done.stderr
    assert json.loads(done.stdout)["predictions"] == json.loads(warm.stdout)["predictions"]
    doctor = json.loads(shiwu("doctor", "--json", env=env, wrap=wrap).stdout)
    assert [c["current"] for c in doctor["auto_choices"]] == [True]
    assert doctor["cache_read_only"] == str(cache) and doctor["cache_dir"] != str(cache)
    # OpenVINO reads the blobs it compiled into the warm cache (it compiles what is missing, quietly)
    assert any((cache / "openvino-blobs").iterdir())
    where = subprocess.run([*wrap, sys.executable, "-c", "from shiwu.backends.openvino import OpenVINOBackend; "
                            "from shiwu.models.registry import get_model; "
                            "print(OpenVINOBackend(get_model(None), size=224)._config['CACHE_DIR'])"],
                           capture_output=True, text=True, timeout=300, env={**os.environ, **env})
    assert where.stdout.strip() == str(cache / "openvino-blobs" / "f32"), where.stderr
    # a memo there that cannot be used (damaged, or of an older shiwu) is made again in the writable folder
    for memo in (cache / "auto").glob("*.json"):
        memo.write_text("[]", encoding="utf-8")
    done = shiwu("predict", photo, "--json", "-v", env=env, wrap=wrap)
    assert done.returncode == 0 and "measuring backends" in done.stderr, done.stderr
    warnings = [line for line in done.stderr.splitlines() if "warning:" in line]
    assert len(warnings) == 1 and "what it holds is read" in warnings[0], done.stderr


@pytest.mark.slow
def test_a_home_that_cannot_hold_a_cache(model_and_photos, tmp_path):
    model, photos = model_and_photos
    env = {"HOME": "/proc/x", "SHIWU_CACHE": "", "XDG_CACHE_HOME": ""}
    done = shiwu("predict", photos / "red.png", "--model", model, "-b", "onnxruntime", "--json", env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["predictions"][0]["label"] == "红"
    assert "cannot be written" in done.stderr


def _damage_slot_into_a_folder(cache: Path) -> None:
    (slot,) = (cache / "onnx").glob("*.onnx")
    slot.unlink()
    (slot / "inside").mkdir(parents=True)


def _binary_fingerprints(cache: Path) -> None:
    for memo in (cache / "fingerprints").glob("*.txt"):
        memo.write_bytes(b"\xff\xfe\x00binary" * 8)


def _fingerprint_memos_as_folders(cache: Path) -> None:
    for memo in (cache / "fingerprints").glob("*.txt"):
        memo.unlink()
        memo.mkdir()


def _json_lists(cache: Path) -> None:
    for memo in [*(cache / "model-facts").glob("*.json"), *(cache / "onnx").glob("*.record.json")]:
        memo.write_text("[1, 2, 3]")


@pytest.mark.parametrize("damage", [_damage_slot_into_a_folder, _binary_fingerprints,
                                    _fingerprint_memos_as_folders, _json_lists])
@pytest.mark.slow
def test_damaged_cache_entries_are_rebuilt(model_and_photos, tmp_path, damage):
    model, photos = model_and_photos
    env = {"SHIWU_CACHE": str(tmp_path / "cache")}
    args = ["predict", photos / "red.png", "--model", model, "-b", "onnxruntime", "--json"]
    assert shiwu(*args, env=env).returncode == 0
    damage(tmp_path / "cache")
    for _ in range(2):  # rebuilt, then used
        done = shiwu(*args, env=env)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["predictions"][0]["label"] == "红"


@pytest.mark.slow
def test_a_corrupt_gallery_cache_is_rebuilt(model_and_photos, tmp_path):
    model, photos = model_and_photos
    gallery = tmp_path / "gallery"
    for name, colour in (("红色", (250, 10, 10)), ("蓝色", (10, 10, 250))):
        (gallery / name).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (64, 64), tuple(max(0, c - 20 * i) for c in colour)).save(gallery / name / f"{i}.png")
    env = {"SHIWU_CACHE": str(tmp_path / "cache")}
    args = ["predict", photos / "red.png", "--model", model, "-b", "onnxruntime", "--gallery", gallery, "--json"]
    assert shiwu(*args, env=env).returncode == 0
    (database,) = (tmp_path / "cache" / "gallery").glob("*.sqlite")
    database.write_bytes(b"this is not a database" * 100)
    done = shiwu(*args, env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["predictions"][0]["label"] == "红色"
