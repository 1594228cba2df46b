"""File names that are not UTF-8 (GBK names from a zip made on Chinese Windows) and names full of
terminal controls: batch, index, search, dedupe and the HTTP API take them all, every name
round-trips (JSON, CSV, Parquet, SQLite, HTTP JSON) and --resume matches it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest

from support.photos import DATA
from support.batch import small_photos

from shiwu.display import printable
from shiwu.filenames import lossless, os_path, readable
from shiwu.index import open_index

SHIWU = str(Path(sys.executable).parent / "shiwu")
FAST = ["--backend", "torch", "--threads", "1", "-q", "--workers", "1"]
GBK = os.fsdecode("照片".encode("gbk") + b".jpg")  # b'\xd5\xd5\xc6\xac.jpg': not UTF-8
GBK_READABLE = "\\xd5\\xd5Ƭ.jpg"  # \xc6\xac happens to be UTF-8 (Ƭ)
# LC_ALL=C.UTF-8: stdout is strict UTF-8, as on a user's terminal (the C locale would hide the bug)
UTF8 = {"LC_ALL": "C.UTF-8", "PYTHONIOENCODING": "utf-8"}


def shiwu(*args, timeout=600):
    # the environment as it is now (the session's fixtures set SHIWU_CACHE and SHIWU_PRECISION)
    return subprocess.run([SHIWU, *map(str, args)], capture_output=True, text=True, encoding="utf-8",
                          errors="replace", timeout=timeout, env={**os.environ, **UTF8})


@pytest.fixture
def photos(tmp_path):
    """Six photos, the third renamed to GBK bytes."""
    folder = tmp_path / "photos"
    paths = small_photos(folder, 6)
    os.rename(paths[2], os.path.join(os.fspath(folder), GBK))
    return folder


def test_the_two_forms_of_a_name():
    real = "/data/" + GBK
    assert readable(real) == "/data/" + GBK_READABLE
    assert lossless(real) == "file:///data/%D5%D5%C6%AC.jpg" and os_path(lossless(real)) == real
    assert lossless("/data/照片 #1%.jpg") == "/data/照片 #1%.jpg"  # UTF-8 names are unchanged
    assert os_path("/data/照片.jpg") == "/data/照片.jpg"


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_batch_writes_every_row_and_resume_matches_the_name(photos, tmp_path, suffix):
    out = tmp_path / f"out{suffix}"
    run = shiwu("batch", photos, "--out", out, *FAST)
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    rows = _read(out)
    assert len(rows) == 6
    (gbk,) = [r for r in rows if "xd5" in r["image"]]
    assert gbk["image"].endswith(GBK_READABLE)  # readable
    assert os_path(gbk["path"]) == os.path.realpath(os.path.join(os.fspath(photos), GBK))  # lossless
    assert os.path.exists(os_path(gbk["path"]))
    again = shiwu("batch", photos, "--out", out, "--resume", *FAST)
    assert again.returncode == 0, again.stderr
    assert "nothing to do" in again.stderr and len(_read(out)) == 6


def _read(out: Path) -> list[dict]:
    import csv

    if out.suffix == ".jsonl":
        return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    if out.suffix == ".csv":
        with open(out, encoding="utf-8-sig", newline="") as handle:
            return list(csv.DictReader(handle))
    return pq.read_table(out).to_pylist()


@pytest.mark.slow
def test_index_search_and_dedupe_take_the_name_and_a_second_run_finds_it_done(photos, tmp_path):
    index = tmp_path / "索引"
    run = shiwu("index", photos, "--out", index, *FAST)
    assert run.returncode == 0, run.stderr
    with open_index(index) as opened:
        (row,) = [r for r in opened.all_rows() if "xd5" in r.path]
        assert row.path.endswith(GBK_READABLE) and os.path.exists(row.os_path)
        assert len(opened) == 6
    again = shiwu("index", photos, "--out", index, *FAST)
    assert again.returncode == 0 and "0 embedded" in again.stderr, again.stderr
    query = os.path.join(os.fspath(photos), GBK)
    found = shiwu("search", query, "--index", index, "--json", "--backend", "torch", "--threads", "1")
    assert found.returncode == 0, found.stderr
    (result,) = [json.loads(line) for line in found.stdout.splitlines()]
    assert result["image"].endswith(GBK_READABLE)
    assert result["matches"][0]["image"].endswith(GBK_READABLE) and result["matches"][0]["score"] > 0.999
    text = shiwu("search", query, "--index", index, "--backend", "torch", "--threads", "1")
    assert text.returncode == 0 and GBK_READABLE in text.stdout, text.stderr
    dupes = shiwu("dedupe", "--index", index, "--json")
    assert dupes.returncode == 0 and "groups" in json.loads(dupes.stdout), dupes.stderr


@pytest.mark.slow
def test_the_http_search_route_serialises_the_name_and_serves_its_thumbnail(photos, tmp_path):
    from shiwu.server.process import ServerProcess

    index = tmp_path / "index"
    fast = ["--backend", "onnxruntime", "--threads", "1"]
    assert shiwu("index", photos, "--out", index, *fast, "-q").returncode == 0
    serve = [*fast, "--max-batch-size", "4", "--warmup-seconds", "0", "--no-access-log", "--index", str(index)]
    with ServerProcess(serve) as server, httpx.Client(base_url=server.url, timeout=120) as client:
        with open(os.path.join(os.fspath(photos), GBK), "rb") as handle:
            response = client.post("/v1/search", params={"topk": 1},
                                   files=[("files", ("q.jpg", handle.read(), "image/jpeg"))])
        assert response.status_code == 200, response.text
        (match,) = response.json()["results"][0]["matches"]
        assert match["image"].endswith(GBK_READABLE)
        thumbnail = client.get(match["thumbnail"])
        assert thumbnail.status_code == 200 and thumbnail.content[:2] == b"\xff\xd8"


def test_terminal_controls_in_names_and_labels_are_escaped():
    assert printable("a\rb\x1b[2Jc\nd\te\x7f") == "a\\rb\\x1b[2Jc\\nd\\te\\x7f"
    assert printable("photo\u202egpj.exe") == "photo\\u202egpj.exe"
    assert printable("照片 (1).jpg") == "照片 (1).jpg" and printable(GBK) == GBK_READABLE


@pytest.mark.slow
def test_batch_and_search_text_output_escape_a_name_with_controls(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    evil = folder / "x\x1b[2J\rfake.jpg"
    evil.write_bytes(b"not an image")  # an error line names it
    (folder / "ok.jpg").write_bytes((DATA / "coffee.jpg").read_bytes())
    (folder / "y\x1b[31mred\n.jpg").write_bytes((DATA / "coffee.jpg").read_bytes())  # a match
    run = shiwu("batch", folder, "--out", tmp_path / "out.jsonl", *FAST)
    assert run.returncode == 1
    assert "\x1b" not in run.stderr and "\r" not in run.stderr and "x\\x1b[2J\\rfake.jpg" in run.stderr
    predicted = shiwu("predict", evil, folder / "ok.jpg", "--backend", "torch", "--threads", "1")
    assert "\x1b" not in predicted.stdout + predicted.stderr
    index = tmp_path / "index"
    shiwu("index", folder, "--out", index, *FAST)
    found = shiwu("search", folder / "ok.jpg", "--index", index, "--backend", "torch", "--threads", "1")
    assert found.returncode == 0 and "\x1b" not in found.stdout, found.stderr
    assert "y\\x1b[31mred\\n.jpg" in found.stdout


@pytest.mark.slow
@pytest.mark.ray
def test_the_ray_engine_carries_the_name_through_arrow(photos, tmp_path):
    from support.batch import RAY_ENV

    out = tmp_path / "out.jsonl"
    run = subprocess.run([SHIWU, "batch", str(photos), "--out", str(out), "--engine", "ray", "--batch-size", "4",
                          "--backend", "torch", "--threads", "1", "-q"], capture_output=True, text=True,
                         encoding="utf-8", errors="replace", timeout=900, env={**os.environ, **UTF8, **RAY_ENV})
    assert run.returncode == 0, run.stderr
    rows = _read(out)
    assert len(rows) == 6 and sum(r["image"].endswith(GBK_READABLE) for r in rows) == 1
    assert all(r["error"] is None for r in rows)
