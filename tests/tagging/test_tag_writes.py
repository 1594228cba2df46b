"""`shiwu tag`'s writes, checked with exiftool as the independent reader: sidecars and embedded
keywords in JPEG, PNG, WebP, HEIC and TIFF; pixels, every other tag, mtime and permissions kept;
a second run byte-identical; read-only and changed files left alone, and the run goes on."""

from __future__ import annotations

import os

import pytest

from shiwu.tagging import ExifTool, FileState, Keywords, TagSettings, TagWriteError, tag_photos, write_embedded
from support.tag_helpers import fixed_labels, keywords, make_photo, other_metadata, pixels


@pytest.fixture()
def tool():
    with ExifTool() as running:
        yield running


def run(tool, photos, **settings):
    labels = settings.pop("labels", {})
    return list(tag_photos([str(p) for p in photos], TagSettings(**settings), tool,
                           recognize=fixed_labels(labels)))


def test_sidecar_full_and_base_names_and_the_photo_is_not_touched(tmp_path, tool):
    photo = make_photo(tmp_path / "cat.jpg")
    original = photo.read_bytes()
    [row] = run(tool, [photo], labels={"cat.jpg": [("猫", 0.9), ("狗", 0.5), ("鸟", 0.1)]})
    assert row.error is None and row.changed and row.target == str(tmp_path / "cat.jpg.xmp")
    assert keywords(tmp_path / "cat.jpg.xmp") == {"subject": ["猫", "狗"], "hierarchy": ["识物|猫", "识物|狗"],
                                                   "iptc": []}
    assert photo.read_bytes() == original
    [row] = run(tool, [photo], sidecar_name="base", topk=1)
    assert row.target == str(tmp_path / "cat.xmp") and keywords(tmp_path / "cat.xmp")["subject"] == ["猫"]


def test_second_run_is_byte_identical_and_user_keywords_survive_remove(tmp_path, tool):
    photo = make_photo(tmp_path / "a.jpg")
    sidecar = tmp_path / "a.jpg.xmp"
    import subprocess
    subprocess.run(["exiftool", "-q", "-XMP-dc:Subject=旅行", "-XMP-dc:Subject=家人",
                    "-XMP-lr:HierarchicalSubject=地点|北京", "-XMP-dc:Title=假期", str(sidecar)], check=True)
    run(tool, [photo], labels={"a.jpg": [("猫", 0.9)]})
    first, first_mtime = sidecar.read_bytes(), sidecar.stat().st_mtime_ns
    assert keywords(sidecar)["subject"] == ["旅行", "家人", "猫"]
    [row] = run(tool, [photo], labels={"a.jpg": [("猫", 0.9)]})
    assert not row.changed and sidecar.read_bytes() == first and sidecar.stat().st_mtime_ns == first_mtime
    [row] = run(tool, [photo], remove=True)
    assert row.removed == ["猫"]
    assert keywords(sidecar) == {"subject": ["旅行", "家人"], "hierarchy": ["地点|北京"], "iptc": []}
    assert "假期" in sidecar.read_text(encoding="utf-8")


def test_dry_run_writes_nothing(tmp_path, tool):
    photo = make_photo(tmp_path / "a.jpg")
    [row] = run(tool, [photo], dry_run=True, in_place=True)
    assert row.changed and row.dry_run and row.added == ["猫"]
    assert not (tmp_path / "a.jpg.xmp").exists() and keywords(photo)["subject"] == []


def test_english_labels_too(tmp_path, tool):
    photo = make_photo(tmp_path / "a.jpg")
    run(tool, [photo], languages=("zh", "en"))
    assert keywords(tmp_path / "a.jpg.xmp")["hierarchy"] == ["识物|猫", "识物|en-猫"]


@pytest.mark.parametrize("suffix", ["jpg", "png", "webp", "heic", "avif", "tif"])
def test_in_place_keeps_pixels_metadata_mtime_and_mode(tmp_path, tool, suffix):
    photo = make_photo(tmp_path / f"photo.{suffix}")
    os.chmod(photo, 0o640)
    os.utime(photo, ns=(1_600_000_000_000_000_000, 1_600_000_000_123_456_789))
    before_pixels, before_meta = pixels(photo), other_metadata(photo)
    [row] = run(tool, [photo], in_place=True, labels={photo.name: [("猫", 0.9), ("狗", 0.8)]})
    assert row.error is None and row.changed
    found = keywords(photo)
    assert found["subject"] == ["猫", "狗"] and found["hierarchy"] == ["识物|猫", "识物|狗"]
    assert found["iptc"] == (["猫", "狗"] if suffix == "jpg" else [])
    assert pixels(photo) == before_pixels and other_metadata(photo) == before_meta
    info = photo.stat()
    assert info.st_mtime_ns == 1_600_000_000_123_456_789 and info.st_mode & 0o777 == 0o640
    tagged = photo.read_bytes()
    [row] = run(tool, [photo], in_place=True, labels={photo.name: [("猫", 0.9), ("狗", 0.8)]})
    assert not row.changed and photo.read_bytes() == tagged
    [row] = run(tool, [photo], in_place=True, remove=True)
    assert keywords(photo) == {"subject": [], "hierarchy": [], "iptc": []} and pixels(photo) == before_pixels
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_read_only_photo_is_untouched_and_the_run_goes_on(tmp_path, tool):
    locked, fine = make_photo(tmp_path / "locked.jpg"), make_photo(tmp_path / "fine.jpg")
    os.chmod(locked, 0o444)
    original = locked.read_bytes()
    rows = run(tool, [locked, fine], in_place=True)
    assert "locked.jpg" in rows[0].error and "read-only" in rows[0].error and not rows[0].changed
    assert locked.read_bytes() == original
    assert rows[1].error is None and keywords(fine)["subject"] == ["猫"]


def test_a_photo_changed_since_it_was_read_is_left_as_it_is_now(tmp_path, tool):
    photo = make_photo(tmp_path / "a.jpg")
    state = FileState.of(photo)
    make_photo(photo, "horse.png")  # someone else saves the photo meanwhile
    changed = photo.read_bytes()
    with pytest.raises(TagWriteError, match="changed while it was being tagged"):
        write_embedded(tool, photo, Keywords(("猫",), ("识物|猫",), ("猫",)), state)
    assert photo.read_bytes() == changed
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_base_sidecar_shared_by_two_photos_is_refused(tmp_path, tool):
    a, b = make_photo(tmp_path / "x.jpg"), make_photo(tmp_path / "x.heic")
    rows = run(tool, [a, b], sidecar_name="base")
    assert all("would be shared" in row.error for row in rows) and not (tmp_path / "x.xmp").exists()


def test_formats_without_embedded_keywords_say_use_a_sidecar(tmp_path, tool):
    photo = tmp_path / "a.bmp"
    from PIL import Image
    Image.new("RGB", (8, 8)).save(photo)
    [row] = run(tool, [photo], in_place=True)
    assert "use a sidecar" in row.error


def test_keywords_that_look_like_numbers_or_options_are_kept_exactly(tmp_path, tool, monkeypatch):
    import subprocess

    monkeypatch.chdir(tmp_path)
    make_photo(tmp_path / "-photo.jpg")
    subprocess.run(["exiftool", "-q", "-XMP-dc:Subject=1.50", "-XMP-dc:Subject=007", "-XMP-dc:Subject=-x",
                    "./-photo.jpg.xmp"], check=True)
    [row] = run(tool, ["-photo.jpg"])
    assert row.error is None
    assert keywords(tmp_path / "-photo.jpg.xmp")["subject"] == ["1.50", "007", "-x", "猫"]


def test_copies_a_killed_run_left_are_removed_by_the_next_run_in_that_folder(tmp_path, tool):
    """kill -9 during a write leaves a hidden copy (fsutil's .tmp-XXXXXXXX-NAME) beside the photo;
    the next run removes those of photos and sidecars once an hour old, nothing else."""
    import tempfile
    import time

    photo = make_photo(tmp_path / "cat.jpg")

    def leftover(suffix, age):
        fd, name = tempfile.mkstemp(dir=tmp_path, prefix=".tmp-", suffix=suffix)  # as fsutil names them
        os.close(fd)
        os.utime(name, (time.time() - age, time.time() - age))
        return os.path.basename(name)

    old_copy, old_sidecar = leftover("-cat.jpg", 3700), leftover("-cat.jpg.xmp", 3700)
    exiftool_tmp = leftover("-cat.jpg_exiftool_tmp", 3700)
    young = leftover("-cat.jpg", 5)                    # a live run may be writing it
    foreign = [leftover("-notes.txt", 3700), leftover("", 3700)]  # not a photo's: another program's
    (tmp_path / ".tmp-build").mkdir()
    run(tool, [photo], dry_run=True, labels={"cat.jpg": [("猫", 0.9)]})
    assert {old_copy, old_sidecar, exiftool_tmp} <= set(os.listdir(tmp_path))  # a dry run changes nothing
    [row] = run(tool, [photo], labels={"cat.jpg": [("猫", 0.9)]})
    assert row.error is None and row.changed
    assert sorted(os.listdir(tmp_path)) == sorted(["cat.jpg", "cat.jpg.xmp", young, *foreign, ".tmp-build"])


def test_a_fifo_and_a_link_loop_are_named_for_what_they_are(tmp_path, tool):
    """A FIFO named x.jpg and a symbolic link loop are not "file not found" (they are there):
    each gets load_image's reason, nothing is written for them, and the run goes on."""
    os.mkfifo(tmp_path / "x.jpg")
    os.symlink("b.jpg", tmp_path / "a.jpg")
    os.symlink("a.jpg", tmp_path / "b.jpg")
    os.symlink("gone.jpg", tmp_path / "dangling.jpg")
    fine = make_photo(tmp_path / "fine.jpg")
    rows = run(tool, [tmp_path / "x.jpg", tmp_path / "a.jpg", tmp_path / "dangling.jpg", fine])
    assert rows[0].error == f"{tmp_path / 'x.jpg'}: not a regular file"
    assert rows[1].error.startswith(f"{tmp_path / 'a.jpg'}: symbolic link loop")
    assert rows[2].error.startswith(f"{tmp_path / 'dangling.jpg'}: broken symbolic link")
    assert rows[3].error is None and keywords(tmp_path / "fine.jpg.xmp")["subject"] == ["猫"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jpg", "b.jpg", "dangling.jpg", "fine.jpg",
                                                          "fine.jpg.xmp", "x.jpg"]
    from shiwu import ImageError, load_image
    for name, reason in (("x.jpg", "not a regular file"), ("a.jpg", "symbolic link loop")):
        with pytest.raises(ImageError, match=reason):  # the same words as every command
            load_image(tmp_path / name)
