"""Export once, cache forever: where exported models live and how they are named and written.

An entry's key covers everything that changes the exported file: the weights' content hash,
the model name, input size, precision, the artifact kind and the version of the runtime that
will read it. Writes go to a temporary file in the same directory and are renamed into place,
so a reader never sees half a file and two processes exporting at once both end up with a
complete one. A file that fails to load is deleted and rebuilt by the caller.

No torch here: a cached ONNX / OpenVINO model must load without importing it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from .fsutil import atomic_output, atomic_write  # noqa: F401 - atomic_output is part of this API


def cache_dir() -> Path:
    root = os.environ.get("SHIWU_CACHE")
    if root:
        path = Path(root)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        path = Path(xdg) / "shiwu"
    path.mkdir(parents=True, exist_ok=True)
    return path


def weights_fingerprint(path: Path) -> str:
    """sha256 of a weights file, remembered per (path, size, mtime, inode) so that a 630 MB
    checkpoint is hashed once, not at every start."""
    path = Path(path).resolve()
    stat = path.stat()
    identity = f"{path}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ino}"
    memo = cache_dir() / "fingerprints" / (hashlib.sha256(identity.encode()).hexdigest()[:32] + ".txt")
    try:
        remembered = memo.read_text().strip()
        if len(remembered) == 64:
            return remembered
    except OSError:
        pass
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    value = digest.hexdigest()
    atomic_write_text(memo, value)
    return value


def entry_path(*, model: str, fingerprint: str, size: int, precision: str, kind: str,
               runtime_version: str, suffix: str) -> Path:
    """The cache file for one exported artifact. ``kind`` is e.g. 'onnx', 'torchscript'."""
    key = json.dumps([model, fingerprint, size, precision, kind, runtime_version])
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    safe_model = "".join(c if c.isalnum() or c in "-_." else "_" for c in model)[-60:]
    return cache_dir() / kind / f"{safe_model}-{size}-{precision}-{digest}{suffix}"


def atomic_write_text(target: Path, text: str) -> None:
    atomic_write(target, text)


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def is_cached(path: Path) -> bool:
    """Whether ``path`` is one of shiwu's cache entries (never a file of the user's)."""
    try:
        return Path(path).resolve().is_relative_to(cache_dir().resolve())
    except OSError:
        return False


def discard(path: Path) -> None:
    """Remove a corrupt or stale cache entry so the caller can rebuild it. Files outside the
    cache (the user's own model.onnx) are never touched."""
    if not is_cached(path):
        return
    try:
        path.unlink()
    except FileNotFoundError:
        pass
