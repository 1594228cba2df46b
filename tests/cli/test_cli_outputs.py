"""Every command's output path is checked before its work, as `shiwu batch` does: a folder that
cannot be written, a folder that does not exist, a folder given for a file. One line
`shiwu: error: cannot write PATH: reason`, exit 2, no traceback, nothing written (before, `index`,
`eval --json` and `dedupe --csv` did all their work and then ended in a traceback)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support.photos import DATA
from support.unprivileged import as_unprivileged

SHIWU = str(Path(sys.executable).parent / "shiwu")
FAST = ["--backend", "torch", "--threads", "1"]  # torch ships with shiwu: no export step
GRID = ["--backends", "torch", "--threads", "1", "--batch", "1", "--seconds", "0.2", "--views", "2"]


def shiwu(*args, cwd=None):
    return subprocess.run([SHIWU, *map(str, args)], capture_output=True, text=True, encoding="utf-8",
                          timeout=300, cwd=cwd, preexec_fn=as_unprivileged)


@pytest.fixture
def places(tmp_path):
    """A labelled folder for eval, a folder nobody may write into, an ordinary folder, a
    read-only file."""
    labelled = tmp_path / "DS"
    for label, photo in (("espresso", "coffee.jpg"), ("tabby_cat", "chelsea.jpg")):
        (labelled / label).mkdir(parents=True)
        shutil.copy(DATA / photo, labelled / label / photo)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    (tmp_path / "somedir").mkdir()
    (tmp_path / "done.json").write_text("{}\n")
    (tmp_path / "done.json").chmod(0o444)
    yield tmp_path
    locked.chmod(0o755)


NO_ACCESS = "permission denied (no write access to the folder {locked})"
A_FOLDER = "it is a folder; give a file name"
# (arguments, the path the error names, the reason): each command with an output path
CASES = {
    "index": (["index", "{data}", "--out", "{locked}/idx"], "{locked}/idx", NO_ACCESS),
    "index-new-folders": (["index", "{data}", "--out", "{locked}/new/idx"], "{locked}/new/idx", NO_ACCESS),
    "index-a-file": (["index", "{data}", "--out", "{base}/done.json"], "{base}/done.json",
                     "it is a file, not a folder"),
    "export": (["export", "--format", "onnx", "--out", "{locked}/m.onnx"], "{locked}/m.onnx", NO_ACCESS),
    "export-a-folder": (["export", "--format", "torchscript", "--out", "{dir}"], "{dir}", A_FOLDER),
    "eval-no-folder": (["eval", "{ds}", "--json", "{base}/nodir/e.json"], "{base}/nodir/e.json",
                       "the folder {base}/nodir does not exist"),
    "eval-a-folder": (["eval", "{ds}", "--json", "{dir}"], "{dir}", A_FOLDER),
    "eval-locked": (["eval", "{ds}", "--json", "{locked}/e.json"], "{locked}/e.json", NO_ACCESS),
    "eval-read-only-file": (["eval", "{ds}", "--json", "{base}/done.json"], "{base}/done.json",
                            "permission denied (the file is read-only)"),
    "batch-no-folder": (["batch", "{data}", "--out", "{base}/nodir/r.jsonl"], "{base}/nodir/r.jsonl",
                        "the folder {base}/nodir does not exist"),
    "export-new-folders": (["export", "--format", "onnx", "--out", "{locked}/new/m.onnx"], "{locked}/new/m.onnx",
                           NO_ACCESS),
    "dedupe-no-folder": (["dedupe", "{data}", "--csv", "{base}/nodir/d.csv"], "{base}/nodir/d.csv",
                         "the folder {base}/nodir does not exist"),
    "dedupe-a-folder": (["dedupe", "{data}", "--csv", "{dir}", "--tier", "near"], "{dir}", A_FOLDER),
    "dedupe-locked": (["dedupe", "{data}", "--csv", "{locked}/d.csv", "--tier", "near"], "{locked}/d.csv",
                      NO_ACCESS),
    "bench": (["bench", "--json", "{locked}/b.json", "--no-cold", *GRID], "{locked}/b.json", NO_ACCESS),
    "bench-plot": (["bench", "--plot", "{dir}", "--no-cold", *GRID], "{dir}", A_FOLDER),
    "tune": (["tune", "--json", "{dir}", *GRID], "{dir}", A_FOLDER),
}


@pytest.mark.parametrize("case", CASES)
def test_an_output_that_cannot_be_written_is_refused_first(places, case):
    names = dict(data=DATA, base=places, ds=places / "DS", locked=places / "locked", dir=places / "somedir")
    args, path, reason = (text.format(**names) if isinstance(text, str) else [a.format(**names) for a in text]
                          for text in CASES[case])
    before = sorted(places.rglob("*"))
    run = shiwu(*args, *(FAST if args[0] in ("index", "eval", "dedupe", "batch") else []))
    assert run.returncode == 2, (args, run.stderr)
    assert "Traceback" not in run.stderr
    # one line: nothing ran before it (no progress bar, no model loaded, no summary)
    assert run.stderr.splitlines() == [f"shiwu: error: cannot write {path}: {reason}"], run.stderr
    assert sorted(places.rglob("*")) == before and (places / "done.json").read_text() == "{}\n"


def test_a_csv_that_can_be_written_is_written_whole(tmp_path):
    """The check does not stand in the way: the CSV (with its BOM for spreadsheets) is written,
    and the temporary file it was written through is gone."""
    out = tmp_path / "d.csv"
    run = shiwu("dedupe", DATA, "--csv", out, "--tier", "exact")
    assert run.returncode == 0, run.stderr
    assert out.read_bytes().startswith(b"\xef\xbb\xbfgroup,image,representative,size,tier,match\r\n")
    assert [p.name for p in tmp_path.iterdir()] == ["d.csv"]
