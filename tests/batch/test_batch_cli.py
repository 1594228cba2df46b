"""`shiwu batch` as a user runs it: real subprocesses, kill -9, Ctrl-C, and a real local Ray."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from support.bad_images import BAD_FILES, make_bad_files
from support.batch import FAST, RAY_ENV, SHIWU, alive, shiwu, small_photos, written_rows
from support.batch import read_back as read_rows  # rows as dicts, flat columns for CSV/Parquet
from support.photos import CAT_CLASSES, DATA, PHOTOS

def top1(row: dict):
    if "predictions" in row:
        return row["predictions"][0]["index"] if row["predictions"] else None
    value = row["index_1"]
    return None if value in (None, "") else int(value)


def error_of(row: dict):
    if "predictions" in row:
        return row["error"]["message"] if row["error"] else None
    return row["error_message"] or None


def child_pids(pid: int) -> set[int]:
    children = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        children |= {int(c) for c in text}
    return children


def start_and_wait_for_rows(args, out: Path, rows: int, total: int):
    run = subprocess.Popen([SHIWU, *map(str, args)], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 240
    while written_rows(out) < rows:
        assert run.poll() is None, f"ended before it could be stopped: {run.communicate()[1]!r}"
        assert time.monotonic() < deadline, "no rows written in time"
        time.sleep(0.01)
    assert written_rows(out) < total, "the run finished too quickly to be interrupted"
    return run


@pytest.mark.slow
def test_folder_list_and_bad_files_to_all_three_formats(tmp_path):
    (tmp_path / "bad").mkdir()
    bad = make_bad_files(tmp_path / "bad")
    listing = tmp_path / "bad.txt"
    listing.write_text("\n".join(str(p) for p in bad) + "\n")
    nested = small_photos(tmp_path / "photos" / "2024" / "春节", 2)
    inputs = [DATA, tmp_path / "photos", listing]
    expected = [str(p) for p in PHOTOS] + [str(p) for p in nested] + [str(p) for p in bad]
    results = {}
    for suffix in ("jsonl", "csv", "parquet"):
        out = tmp_path / f"results.{suffix}"
        run = shiwu("batch", *inputs, "--out", out, "--recursive", "-k", "3", "--json", *FAST)
        assert run.returncode == 1, run.stderr  # some images failed
        summary = json.loads(run.stdout)
        assert summary["total"] == summary["done"] == len(expected)
        assert summary["failed"] == len(bad) and summary["skipped"] == 0
        assert f"{len(bad)} failed" in run.stderr and "images/s" in run.stderr
        rows = read_rows(out)
        assert [r["image"] for r in rows] == expected
        results[suffix] = rows
    jsonl = results["jsonl"]
    for row in jsonl:
        assert set(row) == {"image", "predictions", "model", "backend", "precision", "error", "path"}
        assert row["path"] == os.path.realpath(row["image"])
        assert row["model"] == "efficientnet-lite0" and row["backend"] == "torch"
    for path, row in zip(bad, jsonl[-len(bad):]):
        assert row["predictions"] == [] and row["error"]["type"] == "ImageError"
        assert BAD_FILES[path.name][0] in row["error"]["message"]
    assert top1(next(r for r in jsonl if r["image"].endswith("chelsea.jpg"))) in CAT_CLASSES
    for flat in (results["csv"], results["parquet"]):
        assert list(flat[0])[:5] == ["image", "label_1", "label_en_1", "index_1", "score_1"]
        assert "label_3" in flat[0] and "label_4" not in flat[0]
        assert [top1(r) for r in flat] == [top1(r) for r in jsonl]
        assert [error_of(r) for r in flat] == [error_of(r) for r in jsonl]
        assert [r["label_1"] or None for r in flat] == [
            r["predictions"][0]["label"] if r["predictions"] else None for r in jsonl]


@pytest.mark.parametrize("suffix", ["jsonl", "parquet"])  # CSV's torn rows: test_batch.py
@pytest.mark.slow
def test_kill_9_mid_run_then_resume_gives_exactly_one_row_per_image(tmp_path, suffix):
    photos = small_photos(tmp_path / "in", 60)
    out = tmp_path / f"out.{suffix}"
    args = ["batch", tmp_path / "in", "-o", out, "--batch-size", "4", "--workers", "1", *FAST]
    run = start_and_wait_for_rows(args, out, rows=8, total=len(photos))
    workers = child_pids(run.pid)
    run.send_signal(signal.SIGKILL)
    run.communicate(timeout=60)
    assert 8 <= written_rows(out) < len(photos)
    deadline = time.monotonic() + 10  # the decoder processes die with the main one
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in workers)

    resumed = shiwu(*args, "--resume", "--json")
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["skipped"] >= 8 and summary["skipped"] + summary["done"] == len(photos)
    rows = read_rows(out)
    assert sorted(r["image"] for r in rows) == sorted(str(p) for p in photos)  # each once
    assert all(top1(r) is not None and not error_of(r) for r in rows)
    assert not out.with_name(out.name + ".partial.jsonl").exists()


@pytest.mark.slow
def test_ctrl_c_stops_after_the_current_batch_with_a_valid_file(tmp_path):
    photos = small_photos(tmp_path / "in", 60)
    out = tmp_path / "out.parquet"  # the hard case: the Parquet file is written on the way out
    args = ["batch", tmp_path / "in", "-o", out, "--batch-size", "4", "--workers", "1", *FAST]
    run = start_and_wait_for_rows(args, out, rows=4, total=len(photos))
    os.killpg(run.pid, signal.SIGINT)  # like Ctrl-C in a terminal: the whole process group
    _, stderr = run.communicate(timeout=120)
    stderr = stderr.decode()
    assert run.returncode == 130, stderr
    assert "stopping after the current batch" in stderr and "--resume" in stderr
    assert "Traceback" not in stderr
    rows = read_rows(out)  # a complete, readable Parquet file
    assert 4 <= len(rows) < len(photos) and len(rows) % 4 == 0
    assert not out.with_name(out.name + ".partial.jsonl").exists()
    resumed = shiwu(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert sorted(r["image"] for r in read_rows(out)) == sorted(str(p) for p in photos)



def test_two_inference_streams_name_the_chosen_setting_once(tmp_path):
    args = ["batch", DATA, "--backend", "onnxruntime", "--precision", "auto", "--threads", "1", "--streams", "2"]
    shiwu(*args, "--out", tmp_path / "first.jsonl")  # the choice remembered, whatever it measured
    run = shiwu(*args, "--out", tmp_path / "again.jsonl")
    assert run.returncode == 0, run.stderr
    named = [line for line in run.stderr.replace("\r", "\n").splitlines() if "efficientnet-lite0: onnxruntime" in line]
    assert len(named) == 1, run.stderr  # each stream built its recognizer: the line came twice

@pytest.mark.slow
def test_usage_errors_exit_2_and_leave_results_alone(tmp_path):
    out = tmp_path / "out.jsonl"
    assert shiwu("batch", DATA / "coffee.jpg", "-o", out, *FAST).returncode == 0
    before = out.read_bytes()
    for args, message in [
        (["batch", DATA / "coffee.jpg", "-o", out], "--resume"),
        (["batch", DATA / "coffee.jpg", "-o", tmp_path / "out.xlsx"], ".parquet"),
        (["batch", tmp_path / "empty", "-o", tmp_path / "x.jsonl"], "no images found"),
        (["batch", DATA / "coffee.jpg", "-o", out, "--resume", "--overwrite"], "not allowed"),
        (["batch", DATA / "coffee.jpg"], "--out"),
        (["batch", DATA / "coffee.jpg", "-o", out, "--resume", "-m", "no-such-model"], "no-such"),
    ]:
        (tmp_path / "empty").mkdir(exist_ok=True)
        run = shiwu(*args)
        assert run.returncode == 2, (args, run.stderr)
        assert message in run.stderr, (args, run.stderr)
    assert out.read_bytes() == before
    again = shiwu("batch", DATA / "coffee.jpg", "-o", out, "--resume", *FAST)
    assert again.returncode == 0 and "nothing to do: the 1 image is already in" in again.stderr
    assert out.read_bytes() == before


def expected_rows(images, topk):
    from shiwu import Recognizer

    results = Recognizer(backend="torch", threads=1).recognize(images, topk=topk)
    return {r.image: r.to_dict() for r in results}


@pytest.mark.ray
@pytest.mark.slow
def test_ray_engine_on_a_local_two_cpu_ray_resumes_what_the_local_engine_began(tmp_path):
    """shiwu starts its own Ray (2 CPUs) and finishes a file the local engine began."""
    (tmp_path / "bad").mkdir()
    bad = make_bad_files(tmp_path / "bad")[:4]
    listing = tmp_path / "all.txt"
    everything = [str(p) for p in PHOTOS] + [str(p) for p in bad]
    listing.write_text("\n".join(everything) + "\n")
    first = tmp_path / "first.txt"
    first.write_text("\n".join(everything[:5]) + "\n")

    mixed = tmp_path / "mixed.jsonl"
    assert shiwu("batch", first, "-o", mixed, "-k", "2", *FAST).returncode == 0
    run = shiwu("batch", listing, "-o", mixed, "-k", "2", "--resume", "--engine", "ray",
                "--batch-size", "4", "--json", *FAST, env={**os.environ, **RAY_ENV})
    assert run.returncode == 1, run.stderr
    summary = json.loads(run.stdout)
    assert summary["engine"] == "ray"
    assert (summary["skipped"], summary["done"], summary["failed"]) == (5, len(everything) - 5, len(bad))
    rows = read_rows(mixed)
    by_image = {r["image"]: r for r in rows}
    assert len(by_image) == len(rows) == len(everything)
    for image, want in expected_rows(everything, 2).items():
        got = by_image[image]
        assert set(got) == set(want) | {"path"} and got["backend"] == want["backend"] == "torch"
        assert top1(got) == top1(want) and got["error"] == want["error"]
        assert len(got["predictions"]) == len(want["predictions"])


@pytest.mark.ray
@pytest.mark.slow
def test_ray_engine_joins_a_running_cluster_with_address(tmp_path):
    """--address: a cluster started elsewhere (here by this test, 2 CPUs) runs the job."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        address = ray.get_runtime_context().gcs_address
        out = tmp_path / "out.csv"
        listing = tmp_path / "list.txt"  # a missing file named in a list is a row with an error
        listing.write_text(f"{tmp_path / 'missing.jpg'}\n")
        images = [DATA / "coffee.jpg", DATA / "chelsea.jpg", listing]
        run = shiwu("batch", *images, "-o", out, "--engine", "ray", "--address", address, "-k", "1",
                    "--json", *FAST, env={**os.environ, **RAY_ENV})
        assert run.returncode == 1, run.stderr
        assert json.loads(run.stdout)["engine"] == "ray"
        rows = {Path(r["image"]).name: r for r in read_rows(out)}
        assert rows["coffee.jpg"]["label_1"] == "浓缩咖啡" and rows["coffee.jpg"]["index_1"] == "967"
        assert int(rows["chelsea.jpg"]["index_1"]) in CAT_CLASSES
        assert rows["missing.jpg"]["error_message"] == "file not found"
        assert ray.is_initialized()  # shiwu left the cluster running: it only disconnected
    finally:
        ray.shutdown()
