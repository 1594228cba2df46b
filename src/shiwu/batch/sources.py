"""Turn the INPUT arguments of ``shiwu batch`` into one ordered list of image paths.

An input is a folder (its image files, by extension; ``recursive`` descends into sub-folders),
a file list (``.txt``/``.lst``/``.list``: one path per line, blank lines and ``#`` comments
ignored, relative paths taken relative to the list's own folder) or ``-`` (the same, read from
standard input), or anything else, which is taken as one image. Paths that do not exist are
kept: they become rows with an error, like any other bad image, instead of stopping the run.
"""

from __future__ import annotations

import os
import sys
from typing import Iterable, Iterator

IMAGE_EXTENSIONS = frozenset({
    ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff",
    ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".ico", ".heic", ".heif", ".avif",
})
LIST_EXTENSIONS = frozenset({".txt", ".lst", ".list"})


class InputError(ValueError):
    """An INPUT argument cannot be used at all (for example an unreadable file list)."""


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def collect_images(inputs: Iterable[str], *, recursive: bool = False, stdin=None) -> list[str]:
    """Every image path named by ``inputs``, in a stable order, each path once."""
    seen: set[str] = set()
    out: list[str] = []
    for path in _expand(inputs, recursive=recursive, stdin=stdin):
        if path not in seen:
            seen.add(path)
            out.append(path)
    return out


def _expand(inputs: Iterable[str], *, recursive: bool, stdin) -> Iterator[str]:
    for item in inputs:
        item = os.fspath(item)
        if item == "-":
            yield from _read_list(stdin if stdin is not None else sys.stdin, base="")
        elif os.path.isdir(item):
            yield from _walk(item, recursive)
        elif os.path.splitext(item)[1].lower() in LIST_EXTENSIONS and os.path.isfile(item):
            try:
                with open(item, encoding="utf-8-sig") as handle:
                    yield from _read_list(handle, base=os.path.dirname(item))
            except (OSError, UnicodeDecodeError) as exc:
                raise InputError(f"cannot read the file list {item}: {exc}") from None
        else:
            yield os.path.normpath(item)


def _read_list(lines: Iterable[str], base: str) -> Iterator[str]:
    for line in lines:
        entry = line.rstrip("\r\n")
        if not entry.strip() or entry.lstrip().startswith("#"):
            continue
        entry = entry.strip()
        yield os.path.normpath(entry if os.path.isabs(entry) else os.path.join(base, entry))


def _walk(folder: str, recursive: bool) -> Iterator[str]:
    """Image files under ``folder``, sorted; hidden files and folders (``.x``) are skipped."""
    folder = os.path.normpath(folder)
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        raise InputError(f"cannot list the folder {folder}: {exc.strerror or exc}") from None
    subfolders = []
    for entry in entries:
        if entry.name.startswith("."):
            continue
        try:
            is_dir = entry.is_dir(follow_symlinks=False)
        except OSError:
            is_dir = False
        if is_dir:
            subfolders.append(entry.path)
        elif is_image_name(entry.name):
            yield entry.path
    if recursive:
        for sub in subfolders:
            yield from _walk(sub, recursive)
