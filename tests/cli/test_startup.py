"""A one-photo command loads what it uses and nothing else: every module a command never uses
costs each `shiwu predict` its import time (faiss alone was ~75 ms of a ~1 s command)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

DATA = Path(__file__).parents[1] / "data"
# the search index, the server, the photo-library tagging, Parquet output: other commands' modules
NOT_FOR_PREDICT = ("faiss", "fastapi", "uvicorn", "exiftool", "imagehash", "pyarrow", "pymilvus", "ray")


def test_predict_imports_no_module_of_another_command():
    probe = ("import json, sys\n"
             "from shiwu.cli import main\n"
             "status = main(sys.argv[1:])\n"
             f"loaded = [m for m in {NOT_FOR_PREDICT!r} if m in sys.modules]\n"
             "print(json.dumps({'status': status, 'loaded': loaded}), file=sys.stderr)\n")
    run = subprocess.run([sys.executable, "-c", probe, "predict", str(DATA / "chelsea.jpg"), "--json",
                          "--backend", "onnxruntime", "--precision", "fp32"],
                         capture_output=True, text=True, timeout=300)
    report = json.loads(run.stderr.strip().splitlines()[-1])
    assert report == {"status": 0, "loaded": []}, run.stderr
    assert json.loads(run.stdout)["predictions"]  # and it did answer
