"""`shiwu batch` under the faults of issue 15, each on a real `shiwu` subprocess: paths spelled
many ways, unwritable outputs, mismatched --topk, mistyped inputs, failed images retried,
file lists with odd names, and a disk that fills up half-way."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from support.batch import FAST, SHIWU, shiwu, small_photos
from support.batch import read_back as read_rows
from support.photos import DATA
from support.unprivileged import as_unprivileged


def run_in(cwd, *args, env=None, **kwargs):
    return subprocess.run([SHIWU, *map(str, args)], capture_output=True, text=True,
                          encoding="utf-8", timeout=300, cwd=cwd, env=env, **kwargs)


def images_of(out: Path) -> list[str]:
    return [r["image"] for r in read_rows(out)]


def real(paths) -> list[str]:
    return sorted(os.path.realpath(p) for p in paths)


# --- 1. one row per image, however its path is spelled ------------------------------------------

@pytest.mark.slow
def test_one_row_per_image_however_the_path_is_spelled(tmp_path):
    photos = tmp_path / "photos"
    top = small_photos(photos, 4)
    misc = small_photos(photos / "misc", 3)
    (tmp_path / "link").symlink_to(photos, target_is_directory=True)
    out = tmp_path / "out.jsonl"

    # inside one run: four spellings of one folder give each image once, first spelling kept
    first = run_in(tmp_path, "batch", "photos/misc", "./photos/misc", photos / "misc",
                   "link/misc", "photos/../photos/misc", "-o", out, "--json", *FAST)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["total"] == 3
    assert images_of(out) == [f"photos/misc/{p.name}" for p in misc]

    # resume over the absolute path of the parent: the 3 rows written as photos/misc/... match
    again = run_in(tmp_path, "batch", photos, "-r", "-o", out, "--resume", "--json", *FAST)
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    assert (summary["skipped"], summary["done"]) == (3, 4)
    # and through the symbolic link, and with ./: nothing left
    for spelling in ("link", "./photos/"):
        done = run_in(tmp_path, "batch", spelling, "-r", "-o", out, "--resume", *FAST)
        assert done.returncode == 0 and "nothing to do: all 7 images" in done.stderr, done.stderr
    # and from inside the folder, as "." (the rows written as photos/misc/... from tmp_path are
    # found beside the results file)
    inside = run_in(photos, "batch", ".", "-r", "-o", out, "--resume", *FAST)
    assert inside.returncode == 0 and "nothing to do: all 7 images" in inside.stderr, inside.stderr
    # rows written from inside the folder, then resumed from elsewhere: "path" (the identity
    # beside the spelling) matches them from any folder
    (photos / "new").mkdir()
    shutil.copy(misc[0], photos / "new" / "copy.jpg")  # same bytes, another file: its own row
    inner = run_in(photos, "batch", "new", "-o", out, "--resume", *FAST)
    assert inner.returncode == 0, inner.stderr
    outer = run_in(tmp_path / "link" / "misc", "batch", "../new", "..", "-r", "-o", out,
                   "--resume", *FAST)
    assert outer.returncode == 0 and "nothing to do: all 8 images" in outer.stderr, outer.stderr
    rows = read_rows(out)
    assert len(rows) == 8 and len({r["path"] for r in rows}) == 8
    assert sorted(r["path"] for r in rows) == real(top + misc + [photos / "new" / "copy.jpg"])
    assert [r["image"] for r in rows[3:7]] == [str(p) for p in top]  # as that run spelled them
    assert rows[7]["image"] == "new/copy.jpg"


# --- 2. an output that cannot be written: one line, exit 2, before decoding ------------------------

@pytest.mark.slow
def test_unwritable_outputs_are_one_line_and_exit_2_before_decoding():
    base = Path(tempfile.mkdtemp(prefix="shiwu-ro-", dir="/tmp"))
    try:
        base.chmod(0o755)
        images = base / "images"
        shutil.copytree(DATA, images)
        for path in [images, *images.iterdir()]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        home = base / "home"
        home.mkdir(mode=0o777)
        home.chmod(0o777)
        env = {**os.environ, "SHIWU_CACHE": str(home / "cache"),
               "SHIWU_CONFIG": str(home / "config.toml"), "HOME": str(home),
               "RAY_USAGE_STATS_ENABLED": "0"}
        locked = base / "locked"   # a folder nobody may write into
        locked.mkdir()
        locked.chmod(0o555)
        readonly = home / "done.jsonl"
        readonly.write_text('{"image": "x.jpg", "predictions": [], "model": '
                            '"efficientnet-lite0", "error": null}\n')
        readonly.chmod(0o444)
        readonly_csv = home / "done.csv"
        readonly_csv.write_text("")
        readonly_csv.chmod(0o444)
        cases = [
            (["-o", locked / "out.jsonl"], "no write access to the folder"),
            (["-o", locked / "out.parquet"], "no write access to the folder"),
            (["-o", locked / "out.csv", "--engine", "ray"], "no write access to the folder"),
            (["-o", readonly, "--resume"], "read-only"),
            (["-o", readonly, "--overwrite"], "read-only"),
            (["-o", readonly_csv, "--overwrite"], "read-only"),
        ]
        for extra, message in cases:
            run = subprocess.run([SHIWU, "batch", str(images), *map(str, extra), *FAST],
                                 capture_output=True, text=True, timeout=120, env=env,
                                 preexec_fn=as_unprivileged)
            assert run.returncode == 2, (extra, run.stderr)
            lines = run.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("shiwu: error: cannot write"), (extra, lines)
            assert message in lines[0] and "Traceback" not in run.stderr
        assert list(locked.iterdir()) == []
        assert readonly.read_text().count("\n") == 1
    finally:
        (base / "locked").chmod(0o755)
        shutil.rmtree(base, ignore_errors=True)


# --- 3. JSONL --resume with another --topk ---------------------------------------------------------

@pytest.mark.slow
def test_jsonl_resume_with_another_topk_is_refused(tmp_path):
    out = tmp_path / "out.jsonl"
    assert shiwu("batch", DATA / "coffee.jpg", "-o", out, "-k", "5", *FAST).returncode == 0
    before = out.read_bytes()
    run = shiwu("batch", DATA / "coffee.jpg", DATA / "chelsea.jpg", "-o", out, "-k", "3",
                "--resume", *FAST)
    assert run.returncode == 2, run.stderr
    assert "5 predictions, not --topk 3" in run.stderr and "Traceback" not in run.stderr
    assert out.read_bytes() == before


# --- 6. a mistyped command-line input ---------------------------------------------------------------

@pytest.mark.slow
def test_a_missing_command_line_input_is_a_usage_error_and_writes_nothing(tmp_path):
    small_photos(tmp_path / "photos", 2)
    out = tmp_path / "out.jsonl"
    run = shiwu("batch", tmp_path / "photso", "-o", out, *FAST)
    assert run.returncode == 2 and "photso: no such file or folder" in run.stderr, run.stderr
    assert not out.exists()
    fixed = shiwu("batch", tmp_path / "photos", "-o", out, *FAST)  # no --overwrite needed
    assert fixed.returncode == 0, fixed.stderr
    # a missing file inside a list stays a row with an error
    listing = tmp_path / "list.txt"
    listing.write_text("photos/img_000.jpg\nphotos/gone.jpg\n")
    listed = shiwu("batch", listing, "-o", tmp_path / "list.jsonl", *FAST)
    assert listed.returncode == 1
    rows = read_rows(tmp_path / "list.jsonl")
    assert [r["error"] and r["error"]["message"] for r in rows] == [None, "file not found"]


# --- 7. --retry-failed ------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", ["jsonl", "csv", "parquet"])
@pytest.mark.slow
def test_retry_failed_replaces_the_rows_of_fixed_images(tmp_path, suffix):
    photos = small_photos(tmp_path / "in", 3)
    broken = tmp_path / "in" / "broken.jpg"
    broken.write_bytes(photos[0].read_bytes()[:300])  # a truncated JPEG
    out = tmp_path / f"out.{suffix}"
    args = ["batch", tmp_path / "in", "-o", out, "-k", "2", *FAST]
    first = shiwu(*args)
    assert first.returncode == 1 and "1 failed" in first.stderr, first.stderr
    assert "1 failed images" not in first.stderr  # singular
    plain = shiwu(*args, "--resume")
    assert plain.returncode == 1 and "nothing to do" in plain.stderr

    shutil.copy(DATA / "coffee.jpg", broken)  # the user fixes the file
    retried = shiwu(*args, "--retry-failed", "--json")
    assert retried.returncode == 0, retried.stderr
    summary = json.loads(retried.stdout)
    assert (summary["retried"], summary["done"], summary["failed"]) == (1, 1, 0)
    assert "tried again" in retried.stderr
    rows = read_rows(out)
    assert sorted(r["image"] for r in rows) == sorted(str(p) for p in [*photos, broken])
    fixed = next(r for r in rows if r["image"] == str(broken))
    if suffix == "jsonl":
        assert fixed["error"] is None and fixed["predictions"][0]["label"] == "浓缩咖啡"
    else:
        assert not fixed["error_message"] and fixed["label_1"] == "浓缩咖啡"
    again = shiwu(*args, "--retry-failed")
    assert again.returncode == 0 and "nothing to do" in again.stderr
    assert shiwu(*args, "--retry-failed", "--overwrite").returncode == 2


# --- 8. --topk above the class count ----------------------------------------------------------------

@pytest.mark.slow
def test_topk_above_the_class_count_is_clamped_with_a_warning(tmp_path):
    out = tmp_path / "out.csv"
    run = shiwu("batch", DATA / "coffee.jpg", "-o", out, "-k", "5000", *FAST)
    assert run.returncode == 0, run.stderr
    assert "--topk 5000 is more than the 1000 classes" in run.stderr
    header = out.read_text(encoding="utf-8-sig").splitlines()[0].split(",")
    assert "label_1000" in header and "label_1001" not in header
    again = shiwu("batch", DATA / "coffee.jpg", DATA / "chelsea.jpg", "-o", out, "-k", "5000",
                  "--resume", *FAST)
    assert again.returncode == 0, again.stderr  # the clamped --topk matches the file


# --- 9. file lists: names verbatim, # comments, NUL-separated stdin --------------------------------

@pytest.mark.slow
def test_file_lists_take_names_verbatim_and_stdin_can_be_nul_separated(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    names = ["#1 生日.jpg", " 前后有空格 .jpg", "普通.jpg"]
    for name in names:
        shutil.copy(DATA / "coffee.jpg", folder / name)
    listing = folder / "list.txt"
    listing.write_bytes("# a comment\r\n./#1 生日.jpg\r\n 前后有空格 .jpg\r\n\r\n普通.jpg"
                        .encode("utf-8"))  # CRLF, and no line ending at the end
    out = tmp_path / "list.jsonl"
    run = shiwu("batch", listing, "-o", out, *FAST)
    assert run.returncode == 0, run.stderr
    assert [Path(i).name for i in images_of(out)] == names

    newline = folder / "换行\n名.jpg"  # only NUL separation can carry this name
    shutil.copy(DATA / "chelsea.jpg", newline)
    found = subprocess.run(["find", str(folder), "-name", "*.jpg", "-print0"],
                           capture_output=True, check=True).stdout
    out0 = tmp_path / "null.jsonl"
    piped = subprocess.run([SHIWU, "batch", "-", "-0", "-o", str(out0), *FAST], input=found,
                           capture_output=True, timeout=300)
    assert piped.returncode == 0, piped.stderr.decode()
    assert sorted(images_of(out0)) == sorted([str(folder / n) for n in names] + [str(newline)])


# --- 10. small things -------------------------------------------------------------------------------

@pytest.mark.slow
def test_address_implies_ray_and_a_fresh_run_says_nothing_about_skipping(tmp_path):
    out = tmp_path / "out.jsonl"
    local = shiwu("batch", DATA / "coffee.jpg", "-o", out, "--engine", "local",
                  "--address", "127.0.0.1:1", *FAST)
    assert local.returncode == 2 and "--address is for --engine ray" in local.stderr
    implied = shiwu("batch", DATA / "coffee.jpg", "-o", out, "--address", "127.0.0.1:1", *FAST)
    assert implied.returncode == 2 and "Ray cluster at 127.0.0.1:1" in implied.stderr
    fresh = shiwu("batch", DATA / "coffee.jpg", "-o", out, *FAST)
    assert fresh.returncode == 0 and "skipped" not in fresh.stderr, fresh.stderr
    assert "1 image in" in fresh.stderr
    done = shiwu("batch", DATA / "coffee.jpg", "-o", out, "--resume", *FAST)
    assert "nothing to do: the 1 image is already in" in done.stderr


# --- also: a full disk (RLIMIT_FSIZE) --------------------------------------------------------------

LIMIT = 6_000  # bytes: a few batches of rows (JSONL ~600 bytes a row, CSV ~250), mid-run


def _file_size_limit():
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))


@pytest.mark.parametrize("suffix", ["jsonl", "csv", "parquet"])
@pytest.mark.slow
def test_a_full_disk_stops_with_a_clear_error_and_resume_completes(tmp_path, suffix):
    photos = small_photos(tmp_path / "in", 40)
    out = tmp_path / f"out.{suffix}"
    # --workers 0: the decoders' shared-memory buffers are files too, and bigger than LIMIT
    args = ["batch", tmp_path / "in", "-o", out, "--batch-size", "4", "--workers", "0", *FAST]
    full = subprocess.run([SHIWU, *map(str, args)], capture_output=True, text=True, timeout=300,
                          preexec_fn=_file_size_limit)
    assert full.returncode == 3, full.stderr
    assert f"cannot write {out}" in full.stderr or f"cannot write {out.name}" in full.stderr, full.stderr
    assert "file too large" in full.stderr and "--resume" in full.stderr
    assert "Traceback" not in full.stderr
    rows = read_rows(out) if out.exists() else []
    journal = out.with_name(out.name + ".partial.jsonl")
    if suffix == "parquet" and journal.exists():  # the final Parquet file did not fit either
        rows += [json.loads(line) for line in journal.read_text(encoding="utf-8").splitlines()]
    assert 0 < len(rows) < len(photos)  # earlier rows intact and readable, whole batches only
    assert len(rows) % 4 == 0 and len({r["image"] for r in rows}) == len(rows)

    resumed = shiwu(*args, "--resume", "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["skipped"] == len(rows)
    assert sorted(images_of(out)) == sorted(str(p) for p in photos)  # each exactly once
    assert not journal.exists()


@pytest.mark.slow
def test_no_space_left_is_named_as_such(tmp_path):
    """ENOSPC, the real full disk: /dev/full fails every write with it."""
    out = tmp_path / "full.jsonl"
    out.symlink_to("/dev/full")
    run = shiwu("batch", DATA / "coffee.jpg", "-o", out, *FAST)
    assert run.returncode == 3, run.stderr
    assert f"cannot write {out}: no space left on the device" in run.stderr
    assert "--resume" in run.stderr and "Traceback" not in run.stderr
