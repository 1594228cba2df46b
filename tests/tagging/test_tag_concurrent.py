"""Two `shiwu tag` runs over one folder at once, and a program that edits a sidecar while shiwu
writes it (digiKam saving its own keywords): every keyword a run reported as added is in the
sidecar as exiftool reads it (or the other run reported taking it out), every keyword the user
or the other program wrote is kept, and each run's journal agrees with the sidecar."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from shiwu.tagging import ExifTool, Journal, TagSettings, tag_photos
from support.tag_helpers import fixed_labels, keywords, make_photo

PHOTOS = 24


def _library(folder: Path) -> list[Path]:
    folder.mkdir()
    photos = [make_photo(folder / f"{i:02d}.jpg", exif=False) for i in range(PHOTOS)]
    for photo in photos[::3]:  # some with the user's own keyword already
        subprocess.run(["exiftool", "-q", "-XMP-dc:Subject=家人", f"{photo}.xmp"], check=True)
    return photos


def _run(photos, labels, journal_file, rows, settings):
    journal = Journal(settings.journal_key(str(labels)), journal_file)
    with ExifTool() as tool:
        rows.extend(tag_photos([str(p) for p in photos], settings, tool,
                               recognize=fixed_labels({}, default=labels), journal=journal))
    journal.close()


def test_two_runs_at_once_lose_no_keyword_and_their_journals_agree_with_the_sidecars(tmp_path):
    photos = _library(tmp_path / "photos")
    runs = {"a": ([("猫", 0.9), ("狗", 0.8)], TagSettings(languages=("zh", "en"))),
            "b": ([("猫", 0.9), ("鸟", 0.7), ("鱼", 0.6)], TagSettings(min_score=0.05, topk=5))}
    rows = {name: [] for name in runs}
    threads = [threading.Thread(target=_run, args=(photos, labels, tmp_path / f"{name}.sqlite", rows[name], settings))
               for name, (labels, settings) in runs.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    a_rows, b_rows = rows["a"], rows["b"]
    assert len(a_rows) == len(b_rows) == PHOTOS
    for a, b, photo in zip(a_rows, b_rows, photos):
        assert a.error is None and b.error is None
        found = keywords(Path(f"{photo}.xmp"))
        for row, other in ((a, b), (b, a)):
            # added by one run: there, or taken out by the other run, which said so
            assert all(k in found["subject"] or k in other.removed for k in row.added), (photo, a, b, found)
        # the sidecar is one run's merge as that run reported it, the user's keyword first
        assert found["subject"] in (a.keywords, b.keywords), (photo, a, b, found)
        assert ("家人" in found["subject"]) == (photos.index(photo) % 3 == 0)
        ours = [h.removeprefix("识物|") for h in found["hierarchy"]]
        assert ours in (a.labels, b.labels)
    for name, (labels, settings) in runs.items():
        journal = Journal(settings.journal_key(str(labels)), tmp_path / f"{name}.sqlite")
        for photo in photos:
            # a run's journal vouches for a sidecar only while it holds that run's keywords
            done = journal.done(photo, Path(f"{photo}.xmp"))
            if done is not None:
                assert [h.removeprefix("识物|") for h in keywords(Path(f"{photo}.xmp"))["hierarchy"]] == done
        journal.close()


class _EditedMeanwhile(ExifTool):
    """exiftool as shiwu uses it, with another program (exiftool on the command line, as digiKam
    saves a sidecar) writing the user's keyword into the sidecar while shiwu's write is under way
    (after shiwu read the sidecar, before it replaced it): ``times`` times."""

    def __init__(self, sidecar: Path, keyword: str, times: int):
        super().__init__()
        self.sidecar, self.keyword, self.times = sidecar, keyword, times

    def write(self, path, keywords):
        if self.times:
            self.times -= 1
            subprocess.run(["exiftool", "-q", "-overwrite_original", f"-XMP-dc:Subject+={self.keyword}{self.times}",
                            str(self.sidecar)], check=True)
        super().write(path, keywords)


def test_an_edit_between_read_and_write_is_kept(tmp_path):
    photo = make_photo(tmp_path / "cat.jpg")
    sidecar = tmp_path / "cat.jpg.xmp"
    subprocess.run(["exiftool", "-q", "-XMP-dc:Subject=旅行", str(sidecar)], check=True)
    with _EditedMeanwhile(sidecar, "家人", times=1) as tool:
        [row] = tag_photos([str(photo)], TagSettings(), tool, recognize=fixed_labels({}))
    assert row.error is None and row.added == ["猫"]
    assert keywords(sidecar) == {"subject": ["旅行", "家人0", "猫"], "hierarchy": ["识物|猫"], "iptc": []}
    assert row.keywords == ["旅行", "家人0", "猫"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_a_new_sidecar_made_meanwhile_is_merged_into(tmp_path):
    photo = make_photo(tmp_path / "cat.jpg")
    sidecar = tmp_path / "cat.jpg.xmp"
    with _EditedMeanwhile(sidecar, "家人", times=1) as tool:
        [row] = tag_photos([str(photo)], TagSettings(), tool, recognize=fixed_labels({}))
    assert row.error is None and keywords(sidecar)["subject"] == ["家人0", "猫"]


def test_a_sidecar_that_keeps_changing_is_left_to_the_other_program_and_named(tmp_path):
    photo = make_photo(tmp_path / "cat.jpg")
    sidecar = tmp_path / "cat.jpg.xmp"
    subprocess.run(["exiftool", "-q", "-XMP-dc:Subject=旅行", str(sidecar)], check=True)
    with _EditedMeanwhile(sidecar, "家人", times=100) as tool:
        [row] = tag_photos([str(photo)], TagSettings(), tool, recognize=fixed_labels({}))
    assert row.error and str(sidecar) in row.error and "changed by another program" in row.error
    assert not row.changed
    found = keywords(sidecar)["subject"]
    assert found[0] == "旅行" and "猫" not in found and len(found) == 6  # each of its 5 edits kept
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


@pytest.mark.slow
def test_two_shiwu_tag_commands_at_once_lose_no_keyword(tmp_path):
    """The walkthrough's case: two `shiwu tag` processes over one folder, other settings each."""
    folder = tmp_path / "photos"
    folder.mkdir()
    sources = ["chelsea.png", "coffee.jpg", "horse.png", "rocket.jpg", "astronaut.jpg"]
    photos = [make_photo(folder / f"{i:02d}.jpg", sources[i % len(sources)], exif=False) for i in range(16)]
    env = {**os.environ, "SHIWU_CACHE": str(tmp_path / "cache")}
    base = [sys.executable, "-m", "shiwu", "tag", str(folder), "--json", "--backend", "torch", "--threads", "1"]
    commands = [[*base, "--lang", "zh,en"], [*base, "--min-score", "0.05", "--topk", "5"]]
    running = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
               for c in commands]
    outputs = [p.communicate(timeout=600) for p in running]
    assert [p.returncode for p in running] == [0, 0], [err[-2000:] for _, err in outputs]
    first, second = ([json.loads(line) for line in out.splitlines()] for out, _ in outputs)
    assert len(first) == len(second) == len(photos)
    for a, b in zip(first, second):
        found = keywords(Path(a["target"]))
        for row, other in ((a, b), (b, a)):
            assert all(k in found["subject"] or k in other["removed"] for k in row["added"]), (a, b, found)
        assert found["subject"] in (a["keywords"], b["keywords"]), (a, b, found)
