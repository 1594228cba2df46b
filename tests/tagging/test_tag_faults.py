"""Nothing lost, ever: `shiwu tag --in-place` killed with SIGKILL at random moments leaves every
photo either untouched or fully tagged (pixels unchanged), and a rerun finishes the job; a full
disk (a file-size limit: EFBIG where a full disk says ENOSPC, the same failed write) leaves
that photo untouched with a line naming it, and the run goes on."""

from __future__ import annotations

import os
import random
import resource
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from support.tag_helpers import DATA, keywords, pixels

COMMAND = [sys.executable, "-m", "shiwu", "tag", "--in-place", "--backend", "torch", "--threads", "1",
           "--min-score", "0", "--topk", "2"]


def _photos(folder, count):
    folder.mkdir()
    base = Image.open(DATA / "chelsea.png").convert("RGB").resize((120, 90))
    originals = {}
    for i in range(count):
        path = folder / f"{i:02d}.jpg"
        base.rotate(i * 7).save(path, quality=90)
        originals[path] = (path.read_bytes(), pixels(path))
    return originals


def _fully_tagged(path) -> bool:
    found = keywords(path)
    return (len(found["subject"]) == 2 and found["hierarchy"] == [f"识物|{k}" for k in found["subject"]]
            and found["iptc"] == found["subject"])


@pytest.mark.slow
def test_kill_9_at_random_moments_leaves_each_photo_untouched_or_fully_tagged(tmp_path):
    # enough photos that no kill comes after the last one, even on a fast CPU (a burst of
    # answers, then 0.3 s, once let one run finish all 24 and none was killed midway)
    originals = _photos(tmp_path / "photos", 48)
    rng = random.Random(7)
    killed_midway = []
    for _ in range(3):
        process = subprocess.Popen([*COMMAND, str(tmp_path / "photos")], stdout=subprocess.PIPE,
                                   stderr=subprocess.DEVNULL, text=True)
        for _ in range(rng.randrange(1, 4)):  # a few photos written, then somewhere in the next
            if not process.stdout.readline():
                break
        time.sleep(rng.uniform(0, 0.15))
        process.kill()
        process.wait()
        untouched = 0
        for path, (data, image) in originals.items():
            untouched += path.read_bytes() == data
            assert path.read_bytes() == data or (_fully_tagged(path) and pixels(path) == image), path
        killed_midway.append(0 < untouched < len(originals))
    assert any(killed_midway)  # the kills landed while photos were being written
    strays = [p for p in (tmp_path / "photos").iterdir() if p not in originals]
    assert all(p.name.startswith(".tmp-") for p in strays), strays  # hidden: never taken for photos
    an_hour_ago = time.time() - 3700
    for stray in strays:  # the rerun comes later: what the kills left is then an hour old
        os.utime(stray, (an_hour_ago, an_hour_ago))
    done = subprocess.run([*COMMAND, str(tmp_path / "photos")], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    for path, (_, image) in originals.items():
        assert _fully_tagged(path) and pixels(path) == image, path
    assert sorted((tmp_path / "photos").iterdir()) == sorted(originals)  # the leftovers removed


def _limit_file_size(limit):
    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails instead of killing (exec keeps it)
    return apply


@pytest.mark.slow
def test_a_full_disk_leaves_the_photo_untouched_and_the_run_goes_on(tmp_path):
    originals = _photos(tmp_path / "photos", 2)
    big = tmp_path / "photos" / "big.jpg"
    noise = np.random.default_rng(0).integers(0, 256, (700, 700, 3), dtype=np.uint8)
    Image.fromarray(noise).save(big, quality=95)
    assert big.stat().st_size > 400_000
    data = big.read_bytes()
    run = subprocess.run([*COMMAND, str(tmp_path / "photos")], capture_output=True, text=True, timeout=600,
                         preexec_fn=_limit_file_size(200_000), env={**os.environ, "SHIWU_CACHE": str(tmp_path)})
    assert run.returncode == 1, run.stderr[-2000:]
    lines = [line for line in run.stderr.splitlines() if "big.jpg" in line]
    assert lines and "left untouched" in lines[0], run.stderr[-2000:]
    assert big.read_bytes() == data and not keywords(big)["subject"]
    for path in originals:
        assert _fully_tagged(path)
    assert not [p for p in (tmp_path / "photos").iterdir() if p.name.startswith(".tmp-")]
