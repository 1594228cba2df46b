"""`shiwu batch --engine ray` under faults, on a real local Ray of 2 CPUs: an inference actor
killed by pid mid-job, a killed driver then --resume, an address where no cluster runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from support.batch import FAST, RAY_ENV, SHIWU, alive, shiwu, small_photos, written_rows
from support.batch import read_back as read_rows
from support.photos import DATA

pytestmark = pytest.mark.ray

ACTOR = "MapWorker(MapBatches(_Predictor))"  # Ray's process title for an inference actor


def descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = list(Path(f"/proc/{parent}/task").iterdir())
        except FileNotFoundError:
            continue
        for task in tasks:
            try:
                children = {int(c) for c in (task / "children").read_text().split()}
            except FileNotFoundError:
                continue
            todo += list(children - found)
            found |= children
    return found


def title(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return ""


def start(args):
    return subprocess.Popen([SHIWU, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True, env={**os.environ, **RAY_ENV})


def wait_for(condition, what: str, run, seconds: float = 240):
    deadline = time.monotonic() + seconds
    while not condition():
        assert run.poll() is None, f"ended before {what}: {run.communicate()[1].decode()[-2000:]}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def kill_all(pids) -> None:
    """Only the processes this test's run started (its Ray included)."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


@pytest.mark.slow
def test_an_inference_actor_killed_mid_job_is_restarted_and_every_image_written_once(tmp_path):
    photos = small_photos(tmp_path / "in", 60)
    out = tmp_path / "out.jsonl"
    run = start(["batch", tmp_path / "in", "-o", out, "--engine", "ray", "--batch-size", "4",
                 "--actors", "1", "--json", *FAST])
    started = set()
    try:
        wait_for(lambda: written_rows(out) >= 8, "the first rows", run)
        started = descendants(run.pid)
        actors = [pid for pid in started if ACTOR in title(pid)]
        assert len(actors) == 1, [title(p) for p in started]
        assert written_rows(out) < len(photos), "the run finished too quickly to be interrupted"
        os.kill(actors[0], signal.SIGKILL)
        stdout, stderr = run.communicate(timeout=400)
        # the Ray shiwu started for the job (GCS, raylet, agents, workers) leaves with it
        deadline = time.monotonic() + 20
        while any(alive(p) for p in started) and time.monotonic() < deadline:
            time.sleep(0.2)
        leftover = [title(p)[:80] for p in started if alive(p)]
        assert not leftover, leftover
    finally:
        if run.poll() is None:
            kill_all(descendants(run.pid) | {run.pid})
        kill_all(p for p in started if alive(p))
    stderr = stderr.decode()
    assert run.returncode == 0, stderr[-3000:]
    summary = json.loads(stdout)
    assert summary["actor_restarts"] >= 1 and summary["done"] == len(photos)
    assert "inference actor crashed and restarted" in stderr
    assert "max_restarts > 0" not in stderr and "Traceback" not in stderr
    rows = read_rows(out)
    assert sorted(r["image"] for r in rows) == sorted(str(p) for p in photos)  # each once
    assert all(r["error"] is None and r["predictions"] for r in rows)


@pytest.mark.slow
def test_a_killed_ray_driver_then_resume_gives_every_image_once(tmp_path):
    photos = small_photos(tmp_path / "in", 60)
    out = tmp_path / "out.csv"
    args = ["batch", tmp_path / "in", "-o", out, "--engine", "ray", "--batch-size", "4", *FAST]
    run = start(args)
    started = set()
    try:
        wait_for(lambda: written_rows(out) >= 8, "the first rows", run)
        started = descendants(run.pid)
        os.killpg(run.pid, signal.SIGKILL)  # the driver and the Ray it started, at once
        run.communicate(timeout=60)
    finally:
        kill_all(p for p in started | descendants(run.pid) if alive(p))
    before = written_rows(out)
    assert 8 <= before < len(photos)

    resumed = shiwu(*args, "--resume", "--json", env={**os.environ, **RAY_ENV}, timeout=400)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads(resumed.stdout)
    assert summary["skipped"] == before and summary["skipped"] + summary["done"] == len(photos)
    assert "max_restarts > 0" not in resumed.stderr
    rows = read_rows(out)
    assert sorted(r["image"] for r in rows) == sorted(str(p) for p in photos)


@pytest.mark.slow
def test_an_address_without_a_cluster_fails_fast_in_one_line(tmp_path):
    import socket

    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with socket.socket() as silent:  # and one that accepts connections but is not Ray
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        for address in (f"127.0.0.1:{port}", "127.0.0.1:%d" % silent.getsockname()[1]):
            began = time.monotonic()
            run = shiwu("batch", DATA / "coffee.jpg", "-o", tmp_path / "out.jsonl", "--engine", "ray",
                        "--address", address, *FAST)
            seconds = time.monotonic() - began
            assert run.returncode == 2, run.stderr
            lines = run.stderr.strip().splitlines()
            assert len(lines) == 1, lines
            assert f"cannot reach a Ray cluster at {address}" in lines[0]
            assert "ray start --head" in lines[0]
            assert seconds < 12, seconds  # the check gives up after 5 s; start-up is the rest
    assert not (tmp_path / "out.jsonl").exists()
