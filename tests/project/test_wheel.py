"""The wheel `pip install .` makes holds what the package reads at run time (labels, the web
page, the calibration photos, the shipped accuracy data) and the py.typed marker, so type
checkers read shiwu's annotations (PEP 561). Built for real, without dependencies or network."""

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_wheel_holds_the_data_files_and_the_typing_marker(tmp_path):
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                            "--wheel-dir", str(tmp_path), str(REPO)], capture_output=True, text=True,
                           timeout=600)
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-2000:]
    (wheel,) = tmp_path.glob("shiwu-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for wanted in ("shiwu/py.typed", "shiwu/labels/imagenet-1k.tsv", "shiwu/server/static/index.html",
                   "shiwu/backends/measured_accuracy.json", "shiwu/errors.py"):
        assert wanted in names, wanted
    assert any(name.startswith("shiwu/calibration/") and name.endswith(".jpg") for name in names)
