"""`shiwu` run as a subprocess by the embedding-route, gallery and web page tests, the quick server
settings and the multipart uploads they share."""

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


def upload(path: Path, name: str | None = None):
    """One photo as a multipart ``files`` part, under its own name or ``name``."""
    return ("files", (name or path.name, path.read_bytes(), "image/jpeg"))


BROKEN = ("files", ("坏的.jpg", b"not an image at all", "image/jpeg"))
