"""`shiwu tag` stopped by Ctrl-C (SIGINT to its whole process group, as a terminal sends it) or
SIGTERM, as batch and index stop: the photo being written is finished, the summary says the run
was interrupted, exit code 130, no Python warning; every sidecar is whole and is one a printed
row reported, and the same command again finishes the rest."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from PIL import Image

from support.tag_helpers import DATA, keywords

COMMAND = [sys.executable, "-m", "shiwu", "tag", "--json", "--backend", "torch", "--threads", "1",
           "--min-score", "0", "--topk", "2"]
PHOTOS = 40


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_finishes_the_photo_in_hand_says_so_and_the_rerun_completes(tmp_path, signum):
    folder = tmp_path / "photos"
    folder.mkdir()
    base = Image.open(DATA / "chelsea.png").convert("RGB").resize((96, 72))
    for i in range(PHOTOS):
        base.rotate(i * 9).save(folder / f"{i:02d}.jpg", quality=90)
    env = {**os.environ, "SHIWU_CACHE": str(tmp_path / "cache")}
    # a session of its own: the signal goes to its whole group, as the terminal's Ctrl-C does
    process = subprocess.Popen([*COMMAND, str(folder)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env, start_new_session=True)
    first = process.stdout.readline()
    assert first, process.stderr.read()[-2000:]
    os.killpg(process.pid, signum)
    rest, stderr = process.communicate(timeout=120)
    rows = [json.loads(line) for line in (first + rest).splitlines()]
    assert process.returncode == 130, stderr[-2000:]
    assert 0 < len(rows) < PHOTOS  # stopped midway
    lines = stderr.splitlines()
    assert f"shiwu: {PHOTOS} photos: tagged {len(rows)}, unchanged 0, failed 0" in lines, stderr
    assert f"shiwu: interrupted: {PHOTOS - len(rows)} photos left; run the same command again to continue" \
        in lines, stderr
    assert "Warning" not in stderr and "Traceback" not in stderr, stderr
    sidecars = sorted(p.name for p in folder.glob("*.xmp"))
    assert sidecars == sorted(os.path.basename(row["target"]) for row in rows)  # the photo in hand finished
    for row in rows:
        found = keywords(folder / os.path.basename(row["target"]))
        assert row["error"] is None and found["subject"] == row["keywords"] == row["added"]
    assert not [p for p in folder.iterdir() if p.name.startswith(".tmp-")]

    again = subprocess.run([*COMMAND, str(folder)], capture_output=True, text=True, timeout=600, env=env)
    assert again.returncode == 0, again.stderr[-2000:]
    rerun = [json.loads(line) for line in again.stdout.splitlines()]
    assert sum(row["resumed"] for row in rerun) == len(rows)  # the done ones are not recognised again
    assert not any(row["changed"] for row in rerun if row["resumed"])
    assert all(len(keywords(folder / f"{i:02d}.jpg.xmp")["subject"]) == 2 for i in range(PHOTOS))
