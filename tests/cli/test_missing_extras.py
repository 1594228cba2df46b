"""A plain `pip install shiwu` has no `index` or `milvus` extra: index, search and dedupe say in
one line which packages they need and which extra brings them, exit 2, before any photo is read
and with nothing written (they ended in a traceback, index after embedding every photo and
leaving a half-made index folder). A Milvus store that cannot be reached is named the same way.
A missing package is made missing the way a plain install has it: its import fails."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from support.photos import DATA

# Runs shiwu's command line with these modules unimportable, as in an environment without them.
WITHOUT = ("import sys\nfor name in sys.argv[1].split(','):\n    sys.modules[name] = None\n"
           "from shiwu.cli import main\nsys.exit(main(sys.argv[2:]))")


def shiwu_without(modules: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", WITHOUT, modules, *map(str, args)], capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("command", [
    ["index", DATA / "chelsea.jpg", "--out", "{tmp}/索引"],
    ["search", DATA / "chelsea.jpg", "--index", "{tmp}/索引"],
    ["dedupe", DATA, "--tier", "exact"],
    ["dedupe", DATA, "--tier", "near"],
    ["dedupe", DATA, "--tier", "similar", "--csv", "{tmp}/d.csv"],
], ids=["index", "search", "dedupe-exact", "dedupe-near", "dedupe-similar"])
def test_without_the_index_extra_the_command_names_it(tmp_path, command):
    args = [str(a).replace("{tmp}", str(tmp_path)) for a in command]
    run = shiwu_without("faiss,imagehash", *args)
    assert run.returncode == 2, run.stderr
    assert run.stderr == (f"shiwu: error: `shiwu {command[0]}` needs faiss-cpu, imagehash: "
                          "pip install 'shiwu[index]'\n")
    assert list(tmp_path.iterdir()) == []  # no half-made index, no report


def test_a_milvus_store_needs_the_milvus_extra_and_a_lite_file_milvus_lite(tmp_path):
    run = shiwu_without("pymilvus", "search", DATA / "chelsea.jpg", "--index", "milvus://127.0.0.1:19530/photos")
    assert run.returncode == 2 and run.stderr.strip() == (
        "shiwu: error: `shiwu search` needs pymilvus: pip install 'shiwu[milvus]'")
    run = shiwu_without("milvus_lite", "index", DATA / "chelsea.jpg", "--store", tmp_path / "照片.db")
    assert run.returncode == 2 and run.stderr.strip() == (
        "shiwu: error: `shiwu index` needs milvus-lite: pip install 'shiwu[milvus]'")
    assert list(tmp_path.iterdir()) == []
    # with everything installed, a local index needs no Milvus package
    run = shiwu_without("pymilvus,milvus_lite", "search", DATA / "chelsea.jpg", "--index", tmp_path / "none")
    assert run.returncode == 2 and "shiwu[milvus]" not in run.stderr and "Traceback" not in run.stderr


def test_a_milvus_store_that_cannot_be_reached_is_named_in_one_line():
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    location = f"milvus://127.0.0.1:{port}/photos"
    for args in (["search", DATA / "chelsea.jpg", "--index", location], ["dedupe", "--index", location],
                 ["index", DATA / "chelsea.jpg", "--store", location]):
        run = shiwu_without("", *args)
        assert run.returncode == 2, (args, run.stderr[-2000:])
        assert run.stderr.startswith(f"shiwu: error: cannot reach the Milvus store {location}: ")
        assert "Traceback" not in run.stderr and len(run.stderr.splitlines()) == 1, run.stderr
