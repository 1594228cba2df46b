"""--nice on batch, index and tag: lower CPU priority, idle I/O priority, half the physical
cores unless --threads says otherwise; a real `shiwu tag --nice` run still tags."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from shiwu.cpu import physical_cores

PROBE = """
import json, os, sys, psutil
from shiwu.cli import build_parser
before = os.nice(0)
args = build_parser().parse_args(sys.argv[1:])
print(json.dumps({"nice": os.nice(0) - before, "io": int(psutil.Process().ionice().ioclass),
                  "threads": args.threads, "flag": args.nice}))
"""


def probe(*argv):
    out = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@pytest.mark.parametrize("command", [["batch", "photos", "--out", "o.jsonl"], ["index", "photos", "--out", "ix"],
                                     ["tag", "photos"]])
@pytest.mark.slow
def test_nice_lowers_cpu_and_io_priority_and_threads(command):
    import psutil

    plain = probe(*command)
    assert plain == {"nice": 0, "io": plain["io"], "threads": None, "flag": False}
    nice = probe(*command, "--nice")
    assert nice["nice"] == 10 and nice["io"] == int(psutil.IOPRIO_CLASS_IDLE) and nice["flag"]
    assert nice["threads"] == max(1, physical_cores() // 2)
    assert probe(*command, "--threads", "3", "--nice")["threads"] == 3
    assert probe(*command, "--nice", "--threads", "3")["threads"] == 3


@pytest.mark.slow
def test_a_nice_tag_run_still_tags(tmp_path):
    from support.tag_helpers import keywords, make_photo

    photo = make_photo(tmp_path / "a.jpg")
    run = subprocess.run([sys.executable, "-m", "shiwu", "tag", str(photo), "--nice", "--backend", "torch",
                          "--min-score", "0", "--topk", "1"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "--nice: CPU nice" in run.stderr and len(keywords(tmp_path / "a.jpg.xmp")["subject"]) == 1
