"""Keywords written so that nothing is ever lost.

Embedded (``--in-place``): the photo is copied to a temporary file beside it, exiftool edits the
copy, the copy is read back and checked (the keywords are the ones meant, the pixels and every
other tag are unchanged), it gets the photo's mtime, permissions and owner, is fsynced and is
renamed over the photo, unless the photo changed since it was read. A kill at any moment leaves
the photo as it was or fully tagged (and at most a hidden ``.tmp-*`` file beside it, which the
next run in that folder removes once it is an hour old: ``remove_leftovers``).

Sidecars get the same temp-file + fsync + rename (``shiwu.fsutil``).
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import stat as stat_module
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from .. import fsutil
from .. import images  # registers the HEIF reader for the pixel check; its suffixes
from .exiftool_session import ExifTool, MetadataError
from .keywords import Keywords

# formats whose embedded XMP photo tools read, and exiftool writes; IPTC only for JPEG (the
# other formats have no standard place for it)
EMBEDDABLE = {".jpg": True, ".jpeg": True, ".jpe": True, ".png": False, ".webp": False,
              ".heic": False, ".heif": False, ".hif": False, ".avif": False, ".tif": False, ".tiff": False}


# fsutil.atomic_output's name for a temporary copy of NAME: .tmp-, mkstemp's 8 characters, -NAME
_COPY = re.compile(r"^\.tmp-[a-z0-9_]{8}-(?P<name>.+)$")
EXIFTOOL_TEMPORARY = "_exiftool_tmp"
# exiftool's words for a file it could not write ("Error writing output file", "Error creating ...",
# "Error renaming temporary file"): it does not say why
_WRITING = re.compile(r"writ|creat|renam|output", re.IGNORECASE)  # exiftool's own copy of the file it edits, killed with it


class TagWriteError(RuntimeError):
    """This photo was not changed; the message says why."""


class SidecarChanged(TagWriteError):
    """Another program wrote the sidecar between shiwu's read and its write: nothing was written;
    read it again and merge again."""


@dataclass(frozen=True)
class FileState:
    """What tells that a file changed: any write changes the size, mtime or ctime."""
    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, path: str | os.PathLike) -> "FileState":
        info = os.stat(path)
        return cls(info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def sidecar_path(photo: str | os.PathLike, naming: str) -> Path:
    """``photo.jpg.xmp`` (full: digiKam, darktable, immich) or ``photo.xmp`` (base: Lightroom)."""
    photo = Path(photo)
    return photo.with_name(photo.name + ".xmp") if naming == "full" else photo.with_suffix(".xmp")


def embeds_iptc(photo: str | os.PathLike) -> bool:
    return EMBEDDABLE.get(Path(photo).suffix.lower(), False)


def check_embeddable(photo: str | os.PathLike) -> None:
    if Path(photo).suffix.lower() not in EMBEDDABLE:
        raise TagWriteError(f"cannot embed keywords in {Path(photo).suffix or 'this'} files "
                            "(JPEG, PNG, WebP, HEIC, AVIF, TIFF only): use a sidecar (drop --in-place)")


_NOW = object()


def write_sidecar(tool: ExifTool, sidecar: Path, keywords: Keywords, read_state=_NOW) -> None:
    """Make ``sidecar``'s keywords ``keywords``, merged from the sidecar as it was when its state
    was ``read_state`` (None: there was none; not given: as it is now). Raises SidecarChanged, leaving it as it is now,
    when another program wrote it since (the caller reads and merges again), TagWriteError when
    it cannot be written. The caller holds ``fsutil.folder_lock`` so shiwu's own runs take turns;
    the state check is what catches a program that takes no lock (digiKam saving its edits)."""
    sidecar = Path(sidecar)
    read_state = state_of(sidecar) if read_state is _NOW else read_state
    temporary = None
    try:
        with fsutil.atomic_output(sidecar) as temporary:
            if read_state is not None:
                shutil.copyfile(sidecar, temporary)
                _unchanged(sidecar, read_state)  # the copy is the version the keywords were read from
            else:
                temporary.unlink()  # exiftool creates a new XMP file only where none exists
            tool.write(temporary, keywords)
            if tool.keywords(temporary, iptc=False) != keywords:
                raise TagWriteError(f"{sidecar}: the keywords read back differ from the ones written")
            _unchanged(sidecar, read_state)
    except MetadataError as exc:
        raise TagWriteError(f"{sidecar}: {_refused(exc, temporary, sidecar)}") from None
    except FileNotFoundError as exc:
        if read_state is not None and not sidecar.exists():  # removed meanwhile: not ours to recreate
            raise SidecarChanged(f"{sidecar}: removed by another program while it was being tagged") from None
        raise TagWriteError(f"{sidecar}: cannot write ({exc.strerror or exc})") from None
    except OSError as exc:
        raise TagWriteError(f"{sidecar}: cannot write ({exc.strerror or exc})") from None


def state_of(path: Path) -> FileState | None:
    """``path``'s FileState, None when there is no such file."""
    try:
        return FileState.of(path)
    except FileNotFoundError:
        return None


def _unchanged(path: Path, read_state: FileState | None) -> None:
    if state_of(path) != read_state:
        raise SidecarChanged(f"{path}: changed by another program while it was being tagged")


def _refused(exc: MetadataError, temporary: Path | None, target: Path) -> str:
    """exiftool's refusal in the user's terms: the file it names is the user's (not the hidden
    temporary copy it wrote), and a write that failed on a full disk says so (exiftool's own
    words are only "Error writing output file")."""
    text = str(exc)
    if temporary is not None:
        for name in {os.path.abspath(temporary), os.fspath(temporary)}:
            text = text.replace(name, os.fspath(target))
        size = os.stat(target).st_size if target.exists() else 0
        if _WRITING.search(text) and fsutil.out_of_space(temporary.parent, needed=size):
            return f"cannot write ({os.strerror(errno.ENOSPC)})"
    return text


def write_embedded(tool: ExifTool, photo: Path, keywords: Keywords, read_state: FileState) -> None:
    """Put ``keywords`` into ``photo`` itself; raises TagWriteError and leaves it untouched."""
    info = os.stat(photo)
    temporary = None
    if not info.st_mode & (stat_module.S_IWUSR | stat_module.S_IWGRP | stat_module.S_IWOTH) \
            or not os.access(photo, os.W_OK):
        raise TagWriteError(f"{photo}: read-only, left untouched (make it writable, or use a sidecar)")
    before = tool.metadata(photo)
    try:
        with fsutil.atomic_output(photo, mode=stat_module.S_IMODE(info.st_mode)) as temporary:
            shutil.copyfile(photo, temporary)
            tool.write(temporary, keywords)
            _check_copy(tool, photo, temporary, keywords, before)
            if hasattr(os, "chown"):
                try:
                    os.chown(temporary, info.st_uid, info.st_gid)
                except PermissionError:
                    pass  # only root may give a file away; ours is the user's own then
            os.utime(temporary, ns=(info.st_atime_ns, info.st_mtime_ns))
            if FileState.of(photo) != read_state:
                raise TagWriteError(f"{photo}: changed while it was being tagged, left as it is now")
    except MetadataError as exc:
        raise TagWriteError(f"{photo}: {_refused(exc, temporary, photo)}; left untouched") from None
    except OSError as exc:
        raise TagWriteError(f"{photo}: cannot write ({exc.strerror or exc}); left untouched") from None


def _check_copy(tool: ExifTool, photo: Path, copy: Path, keywords: Keywords, before: dict) -> None:
    if tool.keywords(copy, iptc=keywords.iptc is not None) != keywords:
        raise TagWriteError(f"{photo}: the keywords read back differ from the ones written; left untouched")
    after = tool.metadata(copy)
    if after != before:
        changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
        raise TagWriteError(f"{photo}: writing keywords would change other metadata "
                            f"({', '.join(changed[:5])}); left untouched")
    if _pixels(photo) != _pixels(copy):
        raise TagWriteError(f"{photo}: writing keywords would change the pixels; left untouched")


def _pixels(path: Path) -> tuple:
    try:
        with Image.open(path) as image:
            return image.mode, image.size, image.tobytes()
    except (OSError, ValueError, SyntaxError, RuntimeError) as exc:
        # decodable once (it was recognised), so a copy that is not is a broken write
        raise TagWriteError(f"{path}: cannot decode for the pixel check ({exc}); left untouched") from None


def remove_leftovers(folder: Path) -> list[Path]:
    """The hidden copies a killed ``shiwu tag`` left in ``folder``: fsutil's temporaries of a
    photo or an XMP sidecar, an hour old or more (a live run's are seconds old). Nothing else in
    the user's folder is touched, other programs' temporary files included."""
    written = (*images.IMAGE_SUFFIXES, ".xmp")
    names = {m["name"] for stray in fsutil.stray_temporaries(folder) if (m := _COPY.match(stray.name))
             and Path(m["name"].removesuffix(EXIFTOOL_TEMPORARY)).suffix.lower() in written}
    return [stray for name in sorted(names) for stray in fsutil.remove_stray_temporaries(folder, of=name)]


__all__ = ["FileState", "TagWriteError", "SidecarChanged", "state_of", "sidecar_path", "write_sidecar", "write_embedded",
           "check_embeddable", "embeds_iptc", "remove_leftovers"]
