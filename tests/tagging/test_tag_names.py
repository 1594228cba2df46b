"""`shiwu tag` on a photo whose file name is not UTF-8 (GBK, as a zip made on Chinese Windows
brings it): tagged like any other, with exiftool as the independent reader; the journal knows it
on a re-run; --json names it as docs/en/names-and-identity.md says (readable `image`, lossless
`path` and `target`); text output prints it readable. It used to stop the whole run with a
UnicodeEncodeError, --dry-run included, before any photo was tagged."""

from __future__ import annotations

import json
import os
import re
import shutil

import pytest

from shiwu.cli import main
from shiwu.filenames import lossless, os_path
from support.tag_helpers import DATA, keywords

CJK = re.compile(r"[\u4e00-\u9fff]")
# at least one label for every photo, so both get a sidecar
FAST = ["--backend", "torch", "--threads", "2", "--min-score", "0", "--topk", "2"]
GBK = "测试".encode("gbk") + b".jpg"  # b'\xb2\xe2\xca\xd4.jpg': not UTF-8
SHOWN = r"\xb2\xe2\xca\xd4.jpg"       # how shiwu prints it (filenames.readable)


@pytest.fixture()
def folder(tmp_path):
    folder = tmp_path / "解压"
    folder.mkdir()
    shutil.copy(DATA / "coffee.jpg", folder / "coffee.jpg")
    shutil.copy(DATA / "astronaut.jpg", folder / os.fsdecode(GBK))
    return folder


def _names(folder) -> set[bytes]:
    return set(os.listdir(os.fsencode(folder)))


def _rows(capsys) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_a_gbk_named_photo_is_tagged_remembered_and_named(folder, capsys):
    photo = folder / os.fsdecode(GBK)
    sidecar = folder / os.fsdecode(GBK + b".xmp")
    before = _names(folder)

    assert main(["tag", str(folder), "--dry-run", "--json", *FAST]) == 0
    rows = _rows(capsys)
    assert _names(folder) == before  # --dry-run writes nothing
    assert [row["changed"] and row["dry_run"] and not row["error"] for row in rows] == [True, True]
    [gbk] = [row for row in rows if "coffee" not in row["image"]]
    assert gbk["image"] == f"{folder}/{SHOWN}"  # readable
    # lossless: the file:// URI of the bytes, which os_path turns back into the names
    assert gbk["path"] == lossless(os.path.realpath(photo)) and gbk["path"].startswith("file:///")
    assert gbk["path"].endswith("/%B2%E2%CA%D4.jpg") and os_path(gbk["path"]) == os.path.realpath(photo)
    assert gbk["target"].endswith("/%B2%E2%CA%D4.jpg.xmp") and os_path(gbk["target"]) == str(sidecar)

    assert main(["tag", str(folder), *FAST]) == 0
    out = capsys.readouterr().out
    assert f"{folder}/{SHOWN}.xmp: +" in out  # printed readable, not as surrogates
    assert _names(folder) == before | {b"coffee.jpg.xmp", GBK + b".xmp"}
    for written in (folder / "coffee.jpg.xmp", sidecar):
        found = keywords(written)  # exiftool, given the name's own bytes
        assert len(found["subject"]) == 2 and all(CJK.search(k) for k in found["subject"])
        assert found["hierarchy"] == [f"识物|{k}" for k in found["subject"]]

    # the journal recognises the GBK photo: nothing recognised again, nothing rewritten
    state = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (photo, sidecar)}
    assert main(["tag", str(folder), "--json", *FAST]) == 0
    rows = _rows(capsys)
    assert [(row["resumed"], row["changed"], row["error"]) for row in rows] == [(True, False, None)] * 2
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in state} == state

    assert main(["tag", str(folder), "--remove"]) == 0
    assert not keywords(sidecar)["subject"] and not keywords(folder / "coffee.jpg.xmp")["subject"]


def test_a_gbk_named_photo_is_tagged_in_place(folder, capsys):
    photo = folder / os.fsdecode(GBK)
    assert main(["tag", str(photo), "--in-place", "--json", *FAST]) == 0
    [row] = _rows(capsys)
    assert row["changed"] and not row["error"] and os_path(row["target"]) == str(photo)
    found = keywords(photo)
    assert len(found["subject"]) == 2 and found["iptc"] == found["subject"]
    assert _names(folder) == {b"coffee.jpg", GBK}  # no temporary copy left beside it

    assert main(["tag", str(photo), "--in-place", "--remove"]) == 0
    assert f"{folder}/{SHOWN}: -" in capsys.readouterr().out
    assert keywords(photo) == {"subject": [], "hierarchy": [], "iptc": []}


def test_a_line_break_in_a_name_fails_that_photo_and_writes_nowhere_else(tmp_path, monkeypatch, capsys):
    # exiftool's -stay_open reads one argument per line: "a\n-all=\n.jpg" once reached it as the
    # option -all=, and "new\nline.jpg" made it write line.jpg.xmp into the current folder
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(DATA / "coffee.jpg", folder / "coffee.jpg")
    for name in ("new\nline.jpg", "a\n-all=\n.jpg"):
        shutil.copy(DATA / "camera.jpg", folder / name)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    for mode in ([], ["--in-place"]):
        assert main(["tag", str(folder), *FAST, *mode]) == 1
        err = capsys.readouterr().err
        assert err.count("exiftool cannot take a file name with a line break in it: rename it") == 2, err
        assert "failed 2" in err
        assert list(elsewhere.iterdir()) == []
    assert CJK.search(" ".join(keywords(folder / "coffee.jpg")["subject"]))  # the others were tagged
    assert sorted(os.listdir(folder)) == sorted(["coffee.jpg", "coffee.jpg.xmp", "new\nline.jpg", "a\n-all=\n.jpg"])


def test_a_gallery_class_whose_name_has_a_line_break_is_refused_by_name(tmp_path, capsys):
    gallery = tmp_path / "gallery"
    (gallery / "好猫\n-XMP-dc:Creator=injected").mkdir(parents=True)
    shutil.copy(DATA / "chelsea.jpg", gallery / "好猫\n-XMP-dc:Creator=injected" / "1.jpg")
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(DATA / "chelsea.jpg", photos / "cat.jpg")
    assert main(["tag", str(photos), "--gallery", str(gallery), *FAST]) == 2
    err = capsys.readouterr().err
    assert "好猫\\n-XMP-dc:Creator=injected has '\\n' in its name" in err and "rename it" in err
    assert os.listdir(photos) == ["cat.jpg"]
