"""`shiwu` run as a subprocess by the embedding-route and web page tests, and the quick server
settings they share."""

import subprocess
import sys
from pathlib import Path

SHIWU = str(Path(sys.executable).parent / "shiwu")
# onnxruntime, one thread, fixed batches and no warm-up: quick to start on a shared 2-core machine
FAST = ["--backend", "onnxruntime", "--threads", "1"]
SERVE = [*FAST, "--max-batch-size", "4", "--warmup-seconds", "0", "--no-access-log", "--max-images", "6"]


def shiwu(*args, timeout=600):
    return subprocess.run([SHIWU, *map(str, args)], capture_output=True, text=True, encoding="utf-8",
                          timeout=timeout)
