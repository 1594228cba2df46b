"""`shiwu dedupe` when it is stopped (Ctrl-C, SIGTERM, kill -9) and on photos beyond the pixel
limit: no partial answer, nothing left behind, one line per bad file."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from PIL import Image

from support.batch import FAST, SHIWU, shiwu, small_photos
from support.photos import DATA


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    """256 small photos: several batches of embedding, seconds of work to stop in the middle."""
    folder = tmp_path_factory.mktemp("dedupe") / "photos"
    small_photos(folder, 256)
    return folder


def _environment(tmp_path: Path) -> dict:
    """A cache of its own (its tmp/ is where the temporary index goes) and a TMPDIR of its own
    (where it went before), so that both can be looked at."""
    (tmp_path / "tmpdir").mkdir(exist_ok=True)
    return {**os.environ, "SHIWU_CACHE": str(tmp_path / "cache"), "TMPDIR": str(tmp_path / "tmpdir")}


def _temporary_indexes(tmp_path: Path) -> list[Path]:
    """The folders holding a dedupe run's temporary index, wherever they are kept."""
    places = [tmp_path / "cache" / "tmp", tmp_path / "tmpdir"]
    return [p for place in places if place.is_dir() for p in place.iterdir() if "dedupe" in p.name]


def _start_and_wait_for_embedding(args, tmp_path: Path):
    """`shiwu dedupe ...` started as from a terminal (its own process group), returned once its
    temporary index holds the first batch."""
    run = subprocess.Popen([SHIWU, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           start_new_session=True, env=_environment(tmp_path))
    deadline = time.monotonic() + 240
    while not any((p / "index" / "manifest.json").exists() for p in _temporary_indexes(tmp_path)):
        assert run.poll() is None, f"ended before it could be stopped: {run.communicate()[1]!r}"
        assert time.monotonic() < deadline, "no batch embedded in time"
        time.sleep(0.02)
    return run


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_dedupe_reports_nothing_and_exits_130(library, tmp_path, stop):
    csv_file = tmp_path / "groups.csv"
    csv_file.write_text("the report of an earlier run\n", encoding="utf-8")
    run = _start_and_wait_for_embedding(["dedupe", library, "--csv", csv_file, "--json", *FAST], tmp_path)
    os.killpg(run.pid, stop)
    stdout, stderr = (s.decode() for s in run.communicate(timeout=120))
    assert run.returncode == 130, stderr
    assert stdout == ""  # no groups of part of the library
    assert csv_file.read_text(encoding="utf-8") == "the report of an earlier run\n"
    said = [line for line in stderr.splitlines() if "interrupted" in line]
    assert len(said) == 1 and "no duplicates reported" in said[0], stderr
    assert "duplicates," not in stderr and "Traceback" not in stderr  # no "N groups of duplicates"
    assert _temporary_indexes(tmp_path) == []


def test_kill_9_leaves_the_temporary_index_to_the_next_run_which_removes_it(library, tmp_path):
    run = _start_and_wait_for_embedding(["dedupe", library, *FAST], tmp_path)
    os.killpg(run.pid, signal.SIGKILL)
    run.communicate(timeout=60)
    left = _temporary_indexes(tmp_path)
    assert len(left) == 1  # a kill -9 cannot clean up after itself
    an_hour_ago = time.time() - 3600
    os.utime(left[0], (an_hour_ago, an_hour_ago))  # as it is found later, not in the same second
    again = subprocess.run([SHIWU, "dedupe", DATA / "coffee.jpg", DATA / "rocket.jpg", *FAST],
                           capture_output=True, text=True, env=_environment(tmp_path), timeout=300)
    assert again.returncode == 0, again.stderr
    assert _temporary_indexes(tmp_path) == []


def test_a_live_runs_temporary_index_is_not_taken_for_a_killed_ones(library, tmp_path):
    run = _start_and_wait_for_embedding(["dedupe", library, *FAST], tmp_path)
    try:
        (live,) = _temporary_indexes(tmp_path)
        an_hour_ago = time.time() - 3600
        os.utime(live, (an_hour_ago, an_hour_ago))  # old, but its process holds it
        other = subprocess.run([SHIWU, "dedupe", DATA / "coffee.jpg", DATA / "rocket.jpg", *FAST],
                               capture_output=True, text=True, env=_environment(tmp_path), timeout=300)
        assert other.returncode == 0, other.stderr
        assert live.is_dir() and (live / "index" / "manifest.json").exists()
    finally:
        os.killpg(run.pid, signal.SIGKILL)
        run.communicate(timeout=60)


def test_photos_over_the_pixel_limit_are_one_line_each_never_a_python_warning(tmp_path):
    folder = tmp_path / "photos"
    small_photos(folder, 4)
    Image.new("L", (12000, 12000)).save(folder / "big00.png")  # 144 MP: over shiwu's 100 MP, under Pillow's error
    big = {f"big{i:02d}.png" for i in range(40)}
    for name in big:
        if name != "big00.png":
            (folder / name).write_bytes((folder / "big00.png").read_bytes())
    # the hashing threads raced over the process's one list of warning filters, so not every run
    # showed Pillow's warning: measured on the old code, 8 of 10 runs of this folder on 8 threads
    for _ in range(6):
        run = shiwu("dedupe", folder, "--tier", "near", "--threads", "8", "--json")
        assert run.returncode == 0, run.stderr
        assert "Warning" not in run.stderr and "warnings.warn" not in run.stderr, run.stderr
        named = [line for line in run.stderr.splitlines() if "/big" in line]
        assert len(named) == len(big) and all("image too large" in line and "144,000,000 pixels" in line
                                              for line in named), run.stderr
        assert {Path(u["path"]).name for u in json.loads(run.stdout)["unread"]} == big
