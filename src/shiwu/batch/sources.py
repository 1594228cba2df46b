"""Turn the INPUT arguments of ``shiwu batch`` into one ordered list of image paths.

An input is a folder (its image files, by extension; ``recursive`` descends into sub-folders),
a file list (``.txt``/``.lst``/``.list``: one path per line, relative paths taken relative to
the list's own folder) or ``-`` (the same, read from standard input; NUL-separated with
``null=True``, as ``find -print0`` writes), or anything else, which is taken as one image.

File lists: a line whose first character is ``#`` is a comment, an empty line is skipped, and
every other line is a name taken verbatim: only the line ending (``\\n`` or ``\\r\\n``) is
removed, so names with leading or trailing spaces survive; a name that starts with ``#`` is
written ``./#name``.

An input named on the command line that does not exist is a usage error (a mistyped folder must
not become an image row); a missing file named inside a list is a row with an error, like any
other bad image.

Identity: two spellings of one file (``photos/a.jpg``, ``./photos/a.jpg``, the absolute path, a
path through a symbolic link) are the same image. ``image_key`` gives that identity, the
resolved real path, and the row keeps the path as the user spelled it (the first spelling met).
"""

from __future__ import annotations

import os
import sys
from typing import Iterable, Iterator

from ..filenames import lossless
from ..images import IMAGE_SUFFIXES as IMAGE_EXTENSIONS  # the one list of photo suffixes

LIST_EXTENSIONS = frozenset({".txt", ".lst", ".list"})


class InputError(ValueError):
    """An INPUT argument cannot be used at all (missing, or an unreadable file list)."""


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def image_key(path: str) -> str:
    """The identity of an image path: its resolved real path (symbolic links followed, ``.``
    and ``..`` removed, relative paths taken from the current folder). A dangling link or a
    loop resolves as far as it goes, so it is still one stable key. A path that is not UTF-8
    gives the ``file://`` URI of its bytes (``filenames.lossless``): text every format can hold."""
    try:
        real = os.path.realpath(path)
    except (OSError, ValueError):  # a NUL byte or a name the OS refuses: the spelling is all
        real = os.path.abspath(path)
    return lossless(real)


def no_images_found(inputs: Iterable[str], *, recursive: bool) -> str:
    """What to say when ``inputs`` named no image: the --recursive hint only where it would help
    (a folder given has sub-folders)."""
    inputs = [os.fspath(i) for i in inputs]
    nested = not recursive and any(os.path.isdir(i) and any(e.is_dir() for e in os.scandir(i)) for i in inputs)
    return (f"no images found in {', '.join(inputs)}"
            + (" (add --recursive to look into sub-folders)" if nested else ""))


def collect_images(inputs: Iterable[str], *, recursive: bool = False, stdin=None,
                   null: bool = False) -> list[str]:
    """Every image path named by ``inputs``, in a stable order, each image once (by
    ``image_key``; the first spelling is kept)."""
    seen: set[str] = set()
    out: list[str] = []
    for path in _expand(inputs, recursive=recursive, stdin=stdin, null=null):
        key = image_key(path)
        if key not in seen:
            seen.add(key)
            out.append(path)
    return out


def _expand(inputs: Iterable[str], *, recursive: bool, stdin, null: bool) -> Iterator[str]:
    for item in inputs:
        item = os.fspath(item)
        if item == "-":
            source = stdin if stdin is not None else sys.stdin
            yield from (_read_null(source) if null else _read_list(source, base=""))
        elif os.path.isdir(item):
            yield from _walk(item, recursive)
        elif os.path.splitext(item)[1].lower() in LIST_EXTENSIONS and os.path.isfile(item):
            try:
                # newline="" keeps "\r" inside names; _read_list removes the line endings itself
                with open(item, encoding="utf-8-sig", newline="") as handle:
                    yield from _read_list(handle, base=os.path.dirname(item))
            except (OSError, UnicodeDecodeError) as exc:
                raise InputError(f"cannot read the file list {item}: {exc}") from None
        elif not os.path.lexists(item):
            # lexists: a dangling symbolic link is there (and gets a row saying it is broken)
            raise InputError(f"{item}: no such file or folder (inputs named on the command line "
                             "must exist; check the spelling)")
        else:
            yield os.path.normpath(item)


def _read_list(lines: Iterable[str], base: str) -> Iterator[str]:
    for line in lines:
        if line.endswith("\r\n"):
            entry = line[:-2]
        elif line.endswith("\n"):
            entry = line[:-1]
        else:
            entry = line
        if not entry or entry.startswith("#"):
            continue
        yield _join(base, entry)


def _read_null(source) -> Iterator[str]:
    """NUL-separated names (``find -print0``), bytes decoded as the OS does (``os.fsdecode``)."""
    raw = getattr(source, "buffer", None)
    data = raw.read() if raw is not None else source.read()
    if isinstance(data, str):
        data = os.fsencode(data)
    for name in data.split(b"\0"):
        if name:
            yield _join("", os.fsdecode(name))


def _join(base: str, entry: str) -> str:
    # normpath only removes "./" and doubled separators: spaces and "#" in names stay
    return os.path.normpath(entry if os.path.isabs(entry) else os.path.join(base, entry))


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
