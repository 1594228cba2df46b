"""`shiwu batch` and the signals of a process group: kill -9 of the whole group (resource
tracker included) leaves nothing in /dev/shm, a double Ctrl-C warns of no leak, and a log
(stderr not a terminal) gets lines, not a redrawn progress bar. Real processes, real signals."""

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from support.bad_images import make_bad_files
from support.batch import FAST, SHIWU, shiwu, small_photos, written_rows

SHM = Path("/dev/shm")


def shm_files_of(pid: int) -> set[Path]:
    """The /dev/shm files a process has mapped: shared-memory segments and named semaphores."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return {Path(line.split(None, 5)[5]) for line in maps.splitlines()
            if len(line.split(None, 5)) == 6 and line.split(None, 5)[5].startswith("/dev/shm/")}


def start(args, out: Path, rows: int):
    run = subprocess.Popen([SHIWU, *map(str, args)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           start_new_session=True)
    stderr: list[bytes] = []
    reader = threading.Thread(target=lambda: stderr.extend(iter(lambda: run.stderr.read1(4096), b"")))
    reader.start()
    deadline = time.monotonic() + 240
    while written_rows(out) < rows:
        assert run.poll() is None, b"".join(stderr).decode()
        assert time.monotonic() < deadline, "no rows written in time"
        time.sleep(0.01)
    return run, stderr, reader


@pytest.mark.slow
def test_kill_9_of_the_process_group_leaves_nothing_in_dev_shm(tmp_path):
    photos = small_photos(tmp_path / "in", 80)
    out = tmp_path / "out.jsonl"
    args = ["batch", tmp_path / "in", "-o", out, "--batch-size", "4", "--workers", "2", *FAST]
    run, _, reader = start(args, out, rows=8)
    mapped = shm_files_of(run.pid)
    os.killpg(run.pid, signal.SIGKILL)  # main process, decoders and resource tracker at once
    run.wait(timeout=60)
    reader.join(timeout=60)
    # the batch buffers never had a name in /dev/shm (before: five psm_* segments of 4.8 MB per
    # kill, left for good); what is left is the pool's named semaphores, named after the run
    left = {path for path in mapped if path.exists()}
    assert all(path.name.startswith(f"sem.shiwu-{run.pid}-") for path in left), sorted(left)
    assert written_rows(out) < len(photos)
    # ... which the next run removes as it starts
    again = shiwu(*args, "--resume")
    assert again.returncode == 0, again.stderr
    assert not [path for path in mapped if path.exists()]
    assert not list(SHM.glob(f"*shiwu-{run.pid}-*"))


@pytest.mark.slow
def test_a_double_ctrl_c_warns_of_no_leaked_shared_memory(tmp_path):
    small_photos(tmp_path / "in", 200)
    out = tmp_path / "out.jsonl"
    args = ["batch", tmp_path / "in", "-o", out, "--batch-size", "4", "--workers", "2", *FAST]
    for gap in (0.0, 0.2):  # the second Ctrl-C as the first is being handled, and a moment later
        out.unlink(missing_ok=True)
        run, stderr, reader = start(args, out, rows=8)
        mapped = shm_files_of(run.pid)
        os.killpg(run.pid, signal.SIGINT)
        deadline = time.monotonic() + 60
        while b"stopping after" not in b"".join(stderr) and run.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        time.sleep(gap)
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGINT)
        run.wait(timeout=120)
        reader.join(timeout=60)
        text = b"".join(stderr).decode("utf-8", "replace")
        assert "resource_tracker" not in text and "leaked" not in text, text
        assert run.returncode == 130, text
        assert not [path for path in mapped if path.exists()], text


def test_failures_in_a_log_are_lines_without_carriage_returns(tmp_path):
    small_photos(tmp_path / "in", 6)
    make_bad_files(tmp_path / "in")
    out = tmp_path / "out.jsonl"
    # stderr is a pipe here, as in a log file or under a scheduler; the progress bar is not turned
    # off (no -q): it must not be redrawn with carriage returns where no terminal draws it
    run = subprocess.run([SHIWU, "batch", tmp_path / "in", "-o", out, "--backend", "torch", "--threads", "1"],
                         capture_output=True, timeout=300)
    stderr = run.stderr.decode("utf-8", "replace")
    assert run.returncode == 1, stderr
    failures = [line for line in stderr.splitlines() if line.startswith(f"shiwu: {tmp_path / 'in'}")]
    assert len(failures) >= 3, stderr  # one line each
    assert "\r" not in stderr, repr(stderr)
