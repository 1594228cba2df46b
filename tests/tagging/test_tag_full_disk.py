"""A full disk, the real one: a small tmpfs filled to the last byte (mounted in a mount
namespace of its own, gone when the run ends). A photo whose sidecar is new and one whose
sidecar exists are each named by their sidecar with "No space left on device" (not by the
hidden temporary file exiftool was writing), nothing is left half-written or behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import shiwu

TESTS = Path(__file__).parents[1]

SCRIPT = r"""
import json, os, subprocess, sys
from pathlib import Path
from shiwu.tagging import ExifTool, TagSettings, tag_photos
from support.tag_helpers import fixed_labels, make_photo

folder = Path(sys.argv[1])
new, old = make_photo(folder / "new.jpg", exif=False), make_photo(folder / "old.jpg", exif=False)
subprocess.run(["exiftool", "-q", "-XMP-dc:Subject=旅行", str(folder / "old.jpg.xmp")], check=True)
before = (folder / "old.jpg.xmp").read_bytes()
fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT)
for size in (65536, 4096, 1):  # to the last byte
    try:
        while True:
            os.write(fd, b"\0" * size)
    except OSError:
        pass
os.close(fd)
with ExifTool() as tool:
    rows = list(tag_photos([str(new), str(old)], TagSettings(), tool, recognize=fixed_labels({})))
print(json.dumps({"errors": [row.error for row in rows], "files": sorted(os.listdir(folder)),
                  "old_kept": (folder / "old.jpg.xmp").read_bytes() == before}))
"""


def _on_a_full_disk(folder: Path) -> dict:
    folder.mkdir()
    # root: a private mount namespace; anyone else: a user namespace, where they may mount a tmpfs
    unshare = ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-Urm"]
    mount = 'mount -t tmpfs -o size=512k shiwu-full "$0" && exec "$@"'
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(shiwu.__file__).parents[1]), str(TESTS)])}
    run = subprocess.run([*unshare, "sh", "-c", mount, str(folder), sys.executable, "-c", SCRIPT, str(folder)],
                         capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout)


def test_a_full_disk_names_the_sidecar_and_says_no_space_left(tmp_path):
    result = _on_a_full_disk(tmp_path / "full")
    folder = tmp_path / "full"
    new_error, old_error = result["errors"]
    for error, sidecar in ((new_error, folder / "new.jpg.xmp"), (old_error, folder / "old.jpg.xmp")):
        assert error is not None and error.startswith(f"{sidecar}: "), error
        assert "no space left on device" in error.lower() and ".tmp-" not in error, error
    assert result["files"] == ["filler", "new.jpg", "old.jpg", "old.jpg.xmp"]  # nothing half-written or left
    assert result["old_kept"]
