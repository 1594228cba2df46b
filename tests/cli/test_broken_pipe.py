"""A reader that stops early (`shiwu predict --json *.jpg | head -1`) ends the command quietly, as
it ends any Unix tool: exit 141 (128 + SIGPIPE), nothing on stderr. Before, each of these ended
in a BrokenPipeError traceback (exit 1), or doctor in "Exception ignored … BrokenPipeError"."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support.photos import DATA

SHIWU = str(Path(sys.executable).parent / "shiwu")
FAST = ["--backend", "torch", "--threads", "1", "--quiet"]


def read_then_close(args: list, lines: int) -> tuple[list[str], int, str]:
    """Run shiwu with its stdout into a real pipe; read ``lines`` lines (0: none) and close the
    read end, as `head` does, while the command still has more to write."""
    reader, writer = os.pipe()
    run = subprocess.Popen([SHIWU, *map(str, args)], stdout=writer, stderr=subprocess.PIPE)
    os.close(writer)
    with os.fdopen(reader, "rb") as pipe:
        got = [pipe.readline().decode() for _ in range(lines)]
    _, err = run.communicate(timeout=300)
    return got, run.returncode, err.decode("utf-8", "replace")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """70 photos: predict (a batch of one) and tag (64 photos at a time) are still recognising when
    the reader leaves."""
    folder = tmp_path_factory.mktemp("many")
    for n in range(70):
        shutil.copy(DATA / ("coffee.jpg" if n % 2 else "chelsea.jpg"), folder / f"p{n:02}.jpg")
    return folder


def test_predict_json_into_head(photos):
    got, code, err = read_then_close(["predict", "--json", "--batch-size", "1", *sorted(photos.iterdir()),
                                      *FAST], 1)
    assert got[0].startswith('{"image"'), got
    assert (code, err) == (141, ""), err


def test_doctor_into_a_reader_that_left():
    # doctor prints once, at the end: the reader has gone before it writes anything
    got, code, err = read_then_close(["doctor", "--json"], 0)
    assert (code, err) == (141, ""), err


def test_tag_json_into_head(photos):
    got, code, err = read_then_close(["tag", photos, "-r", "--json", "--dry-run", *FAST], 1)
    assert got[0].startswith("{"), got
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert code == 141, err
