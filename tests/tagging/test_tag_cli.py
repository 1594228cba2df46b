"""`shiwu tag` as a new user runs it (the issue's "done when"), with exiftool as the independent
reader: sidecars with the Chinese labels, photos' bytes unchanged, a second run changing
nothing, --remove leaving the other keywords; --json rows; every kind of model; exit codes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from shiwu.cli import main
from support.tag_helpers import DATA, keywords, make_photo

CJK = re.compile(r"[\u4e00-\u9fff]")
FAST = ["--backend", "torch", "--threads", "2"]


@pytest.fixture()
def library(tmp_path):
    folder = tmp_path / "照片"
    folder.mkdir()
    shutil.copy(DATA / "chelsea.jpg", folder / "猫.jpg")
    make_photo(folder / "咖啡.heic", "coffee.jpg")
    make_photo(folder / "马.png", "horse.png")
    return folder


@pytest.mark.slow
def test_tag_a_folder_as_a_new_user(library, capsys):
    from shiwu import Recognizer

    before = {p.name: p.read_bytes() for p in library.iterdir()}
    subprocess.run(["exiftool", "-q", "-XMP-dc:Subject=家里的猫", "-XMP-lr:HierarchicalSubject=家|猫",
                    str(library / "猫.jpg.xmp")], check=True)
    assert main(["tag", str(library), *FAST]) == 0
    sidecar = library / "猫.jpg.xmp"
    shown = subprocess.run(["exiftool", "-XMP-dc:Subject", str(sidecar)], capture_output=True,
                           text=True, check=True).stdout
    assert CJK.search(shown.split(":", 1)[1])
    # exactly the recognizer's labels with a score of at least 0.3, at most 3, after the user's
    recognizer = Recognizer(backend="torch", threads=2)
    for photo in before:
        [result] = recognizer.recognize([library / photo], topk=3)
        expected = [p.label for p in result.predictions if p.score >= 0.3]
        users = photo == "猫.jpg"
        assert keywords(library / f"{photo}.xmp") == {
            "subject": (["家里的猫"] if users else []) + expected,
            "hierarchy": (["家|猫"] if users else []) + [f"识物|{label}" for label in expected], "iptc": []}
    assert expected or keywords(sidecar)["subject"][1:]  # at least one photo got labels
    assert {p.name: p.read_bytes() for p in library.iterdir() if p.suffix != ".xmp"} == before

    sidecars = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in library.glob("*.xmp")}
    capsys.readouterr()
    assert main(["tag", str(library), *FAST, "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 3 and not any(row["changed"] for row in rows) and all(row["resumed"] for row in rows)
    assert set(rows[0]) == {"image", "path", "target", "changed", "dry_run", "resumed", "labels", "added",
                            "removed", "keywords", "error"}
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in library.glob("*.xmp")} == sidecars

    assert main(["tag", str(library), "--remove"]) == 0
    assert keywords(sidecar) == {"subject": ["家里的猫"], "hierarchy": ["家|猫"], "iptc": []}
    assert all(not keywords(p)["hierarchy"] for p in library.glob("*.xmp") if p != sidecar)


def test_in_place_dry_run_and_json(library, capsys):
    photo = library / "猫.jpg"
    original = photo.read_bytes()
    assert main(["tag", str(photo), "--in-place", "--dry-run", "--json", *FAST]) == 0
    [row] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert row["dry_run"] and row["changed"] and row["added"] and photo.read_bytes() == original
    assert main(["tag", str(photo), "--in-place", "--lang", "zh,en", "--topk", "1", "--min-score", "0", *FAST]) == 0
    found = keywords(photo)
    assert len(found["subject"]) == 2 and CJK.search(found["subject"][0]) and not CJK.search(found["subject"][1])
    assert found["iptc"] == found["subject"]


def test_gallery_classes_become_keywords(library, tmp_path, capsys):
    gallery = tmp_path / "我的类别"
    for label, photo in {"我家的猫": "chelsea.jpg", "早餐杯": "coffee.jpg"}.items():
        (gallery / label).mkdir(parents=True)
        for i, size in enumerate((200, 240, 280)):
            from PIL import Image
            Image.open(DATA / photo).convert("RGB").resize((size, size)).save(gallery / label / f"{i}.jpg")
    assert main(["tag", str(library / "猫.jpg"), "--gallery", str(gallery), "--gallery-mode", "replace",
                 "--min-score", "0", "--topk", "1", *FAST]) == 0
    assert keywords(library / "猫.jpg.xmp")["subject"] == ["我家的猫"]


def test_chinese_clip_labels_become_keywords(library, clip_dir, capsys):
    assert main(["tag", str(library / "马.png"), "--model", str(clip_dir("ViT-B-16")),
                 "--labels", "马,汽车,咖啡杯", "--min-score", "0", "--topk", "2", "--json", *FAST]) == 0
    [row] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(row["labels"]) == 2 and set(row["labels"]) <= {"马", "汽车", "咖啡杯"}
    assert keywords(library / "马.png.xmp")["subject"] == row["labels"]


def test_failures_are_named_and_the_run_goes_on(library, capsys):
    (library / "坏.jpg").write_bytes(b"not a photo")
    assert main(["tag", str(library), *FAST]) == 1
    err = capsys.readouterr().err
    assert "坏.jpg" in err and "failed 1" in err
    assert (library / "猫.jpg.xmp").exists() and not (library / "坏.jpg.xmp").exists()


def test_usage_errors(library, tmp_path, monkeypatch, capsys):
    assert main(["tag", str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()  # nothing to tag is said as batch, index and dedupe say it
    assert main(["tag", str(tmp_path / "empty")]) == 2
    assert capsys.readouterr().err.strip() == f"shiwu: error: no images found in {tmp_path / 'empty'}"
    monkeypatch.setenv("PATH", str(tmp_path))  # no exiftool on it
    assert main(["tag", str(library), "--remove"]) == 2
    assert "needs exiftool" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["tag", str(library), "--lang", "fr"])
    assert exit_.value.code == 2
