"""Real file systems that refuse writes, for the tests of what shiwu does on them: a read-only
view of a folder (a bind mount remounted read-only, which stops root too, unlike chmod) and a
tiny tmpfs that fills up. Both need root (the test machines and CI containers run as root);
each is unmounted on the way out, whatever happened inside."""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path
from typing import Iterator


def _mount(*args) -> None:
    subprocess.run(["mount", *map(str, args)], check=True, capture_output=True)


def _unmount(target: Path) -> None:
    subprocess.run(["umount", "-l", str(target)], check=False, capture_output=True)


@contextlib.contextmanager
def read_only_view(source: Path, target: Path) -> Iterator[Path]:
    """``source`` seen at ``target`` through a read-only bind mount."""
    target.mkdir(parents=True, exist_ok=True)
    _mount("--bind", source, target)
    try:
        _mount("-o", "remount,bind,ro", target)
        yield target
    finally:
        _unmount(target)


@contextlib.contextmanager
def small_disk(target: Path, size: str = "256k") -> Iterator[Path]:
    """A tmpfs of ``size`` at ``target``: a disk that fills up after a few writes."""
    target.mkdir(parents=True, exist_ok=True)
    _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", target)
    try:
        yield target
    finally:
        _unmount(target)


def fill(folder: Path) -> Path:
    """Write into ``folder`` until its file system has no byte left; the filler's path."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as file:  # unbuffered: nothing left to fail at close
        try:
            while file.write(b"\0" * 4096):
                pass
        except OSError:
            pass
    return filler
