"""Export once, cache forever: where exported models live, how they are named, and what an
entry must prove before it is used.

An entry's name comes from everything that changes the exported file: the source's content
hash, the model name, input size, precision, the artifact kind and the version of the runtime
that will read it. A name is only a claim, though (any valid ONNX file can sit in a slot), so
each entry has a record beside it (``<entry>.record.json``) with that key and the artifact's own
size and sha256; an entry whose record is missing or disagrees is rebuilt, with one warning.

The cache is an optimisation, never a requirement: when its folder cannot be written (a
read-only ``SHIWU_CACHE``, ``HOME`` on a read-only or missing path) shiwu warns once and works
in a private temporary folder that is removed at exit. A read-only folder that holds a warm
cache (baked into a container image, a read-only root file system) is still read: its entries
that prove what they are, and its memos (``find``), are used; new ones go to the temporary
folder. Damaged memos (a folder where a file should be, bytes that are not text, JSON of the
wrong shape) read as missing and are rewritten.

No torch here: a cached ONNX / OpenVINO model must load without importing it.
"""

from __future__ import annotations

import atexit
import errno
import hashlib
import json
import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from . import fsutil
from .version import __version__

log = logging.getLogger(__name__)

RECORD_FORMAT = 1
RECORD_SUFFIX = ".record.json"

# a disk (or quota, or file size limit) without room: no other runtime or setting mends that
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})

_in_use: dict[str, Path] = {}     # configured folder -> the folder used for it this process
_keys: dict[str, dict] = {}       # entry path -> the key it was named after (see entry_path)
_warned: set[str] = set()


def configured_dir() -> Path:
    """Where the cache should be: $SHIWU_CACHE, else $XDG_CACHE_HOME/shiwu, else ~/.cache/shiwu."""
    root = os.environ.get("SHIWU_CACHE")
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "shiwu"


def cache_dir() -> Path:
    """The folder entries go in: the configured one when it can be written, else (one warning)
    a private temporary folder, so the run goes on without caching."""
    wanted = configured_dir()
    used = _in_use.get(str(wanted))
    if used is not None and used.is_dir():
        return used
    problem = _writable(wanted)
    if problem is None:
        _clean_strays(wanted)
        used = wanted
    else:
        used = Path(tempfile.mkdtemp(prefix="shiwu-cache-"))
        atexit.register(shutil.rmtree, used, ignore_errors=True)
        if _has_entries(wanted):
            _warn_once(f"the cache folder {wanted} cannot be written ({problem}); what it holds is read, "
                       "and what is missing is made again in every run: set SHIWU_CACHE to a folder you "
                       "can write to keep it")
        else:
            _warn_once(f"the cache folder {wanted} cannot be written ({problem}); running without a cache "
                       "(exports are redone in every run): set SHIWU_CACHE to a folder you can write")
    _in_use[str(wanted)] = used
    return used


def read_only_dir() -> Path | None:
    """The configured folder when it cannot be written but holds a cache (shiwu then writes to a
    temporary one): read, never written or cleaned."""
    wanted = configured_dir()
    used = cache_dir()
    return wanted if used != wanted and _has_entries(wanted) else None


def _has_entries(folder: Path) -> bool:
    try:
        return folder.is_dir() and any(folder.iterdir())
    except OSError:
        return False


def find(*parts: str) -> Path:
    """A memo's path (``find("verdicts", name)``), or a folder a runtime keeps its own cache in:
    the writable folder's, else the read-only cache's when only it has one, else where a new one
    is written."""
    path = cache_dir().joinpath(*parts)
    read_only = read_only_dir()
    if read_only is not None and not os.path.lexists(path) and read_only.joinpath(*parts).exists():
        return read_only.joinpath(*parts)
    return path


def _write_target(target: Path) -> Path:
    """Where a memo ``find`` gave is written: a path in the read-only cache (an outdated memo
    there, found and then replaced) becomes the same path in the writable folder."""
    read_only = read_only_dir()
    if read_only is not None and Path(target).is_relative_to(read_only):
        return cache_dir() / Path(target).relative_to(read_only)
    return Path(target)


def memos(name: str, pattern: str = "*.json") -> list[Path]:
    """Every memo in the folder ``name`` (for `shiwu doctor`), sorted by file name: the writable
    folder's, and the read-only cache's that the writable folder does not hold."""
    found: dict[str, Path] = {}
    read_only = read_only_dir()
    for folder in [cache_dir() / name] + ([read_only / name] if read_only is not None else []):
        if folder.is_dir():
            for path in folder.glob(pattern):
                found.setdefault(path.name, path)
    return [found[n] for n in sorted(found)]


def _writable(folder: Path) -> str | None:
    """None when ``folder`` can hold new files, else why not (one probe file, removed at once)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=fsutil.TEMP_PREFIX)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    return None


def _clean_strays(root: Path) -> None:
    """Remove the temporary files of writers killed mid-write (fsutil's ``.tmp-`` names)."""
    try:
        folders = [root] + [p for p in root.iterdir() if p.is_dir() and not p.is_symlink()]
    except OSError:
        return
    for folder in folders:
        fsutil.remove_stray_temporaries(folder)  # an hour old: an export writes within minutes


def scratch(kind: str):
    """A context manager: a private folder for one run's temporary files (``kind``: what for,
    e.g. ``dedupe``), in the cache's ``tmp`` folder, removed when the run ends; one left by a
    killed run (kill -9) is removed by the next run that asks for one (fsutil.scratch_folder).
    In the cache rather than the system's /tmp: it can be as large as a library's index."""
    return fsutil.scratch_folder(cache_dir() / "tmp", prefix=f"{kind}-")


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        log.warning("%s", message)


# ----------------------------------------------------------------------------- memos

def read_json(path: Path) -> dict:
    """A JSON object from the cache; anything else (missing, unreadable, not an object) is {}."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def atomic_write_text(target: Path, text: str) -> None:
    """Store a memo. A folder squatting on its name is removed first; a memo that cannot be
    written is only a lost shortcut, so that is a warning, never an error."""
    target = _write_target(target)
    try:
        _clear(target)
        fsutil.atomic_write(target, text)
    except OSError as exc:
        _warn_once(f"cannot write the cache file {target} ({exc.strerror or exc}); going on without it")


def weights_fingerprint(path: Path) -> str:
    """sha256 of a weights file, remembered per (path, size, mtime, inode) so that a 630 MB
    checkpoint is hashed once, not at every start."""
    path = Path(path).resolve()
    stat = path.stat()
    identity = f"{path}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ino}"
    memo = find("fingerprints", hashlib.sha256(identity.encode()).hexdigest()[:32] + ".txt")
    try:
        remembered = memo.read_text(encoding="ascii").strip()
        if len(remembered) == 64 and all(c in "0123456789abcdef" for c in remembered):
            return remembered
    except (OSError, ValueError):  # missing, a folder, or bytes that are not a hex digest
        pass
    value = _sha256(path)
    atomic_write_text(memo, value)
    return value


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ----------------------------------------------------------------------------- entries

def entry_path(*, model: str, fingerprint: str, size: int, precision: str, kind: str,
               runtime_version: str, suffix: str) -> Path:
    """The cache file for one exported artifact (``kind`` is e.g. 'onnx', 'torchscript'). An
    entry already there that cannot prove it is this artifact is removed (one warning), so the
    caller, finding none, builds it again."""
    key = {"model": model, "fingerprint": fingerprint, "size": size, "precision": precision,
           "kind": kind, "runtime_version": runtime_version}
    digest = hashlib.sha256(json.dumps(list(key.values())).encode()).hexdigest()[:20]
    safe_model = "".join(c if c.isalnum() or c in "-_." else "_" for c in model)[-60:]
    name = f"{safe_model}-{size}-{precision}-{digest}{suffix}"
    path = cache_dir() / kind / name
    _keys[str(path)] = key
    if os.path.lexists(path):
        doubt = _doubt(path, key)
        if doubt:
            _warn_once(f"the cache entry {path.name} {doubt}; building it again")
            discard(path)
    elif (read_only := read_only_dir()) is not None and os.path.lexists(read_only / kind / name):
        doubt = _doubt(read_only / kind / name, key)
        if doubt is None:
            return read_only / kind / name
        _warn_once(f"the read-only cache's entry {name} {doubt}; building it in the temporary cache")
    return path


def _companions(path: Path) -> list[Path]:
    """The files one entry is made of: an OpenVINO IR is the .xml and its .bin."""
    return [path, path.with_suffix(".bin")] if path.suffix == ".xml" else [path]


def _record_path(path: Path) -> Path:
    return path.with_name(path.name + RECORD_SUFFIX)


def _describe(files: list[Path]) -> list[dict]:
    out = []
    for file in files:
        stat = file.stat()
        out.append({"name": file.name, "size": stat.st_size, "sha256": _sha256(file),
                    "inode": stat.st_ino, "mtime_ns": stat.st_mtime_ns})
    return out


def seal(path: Path, *, written: list[Path] | None = None) -> None:
    """Write the record that lets ``path`` (an entry_path) prove what it is. ``written``: the
    files as they are now, when they are about to be renamed onto the entry's names (a rename
    keeps size, inode and mtime, so the record describes the files that land there)."""
    key = _keys.get(str(path))
    if key is None:
        return  # not an entry (a user's export target): nothing to prove
    files = list(written or []) + _companions(path)[len(written or []):]
    described = _describe(files)
    for item, final in zip(described, _companions(path)):
        item["name"] = final.name
    record = {"format": RECORD_FORMAT, "shiwu": __version__, "key": key, "files": described}
    atomic_write_text(_record_path(path), json.dumps(record, indent=1))


def _doubt(path: Path, key: dict) -> str | None:
    """Why the entry at ``path`` is not the artifact ``key`` names, or None when it proves it is."""
    record = read_json(_record_path(path))
    if not record:
        return "has no record of what it is (written by an older shiwu, or not by shiwu)"
    if record.get("format") != RECORD_FORMAT or record.get("key") != key:
        return "was recorded as another artifact"
    files = record.get("files")
    if not isinstance(files, list) or len(files) != len(_companions(path)):
        return "has a damaged record"
    for item, file in zip(files, _companions(path)):
        if not isinstance(item, dict) or item.get("name") != file.name:
            return "has a damaged record"
        try:
            if not file.is_file() or file.is_symlink():
                return f"is not a regular file ({file.name})"
            stat = file.stat()
            if stat.st_size != item.get("size"):
                return f"has changed since it was written ({file.name}: size)"
            if (stat.st_ino, stat.st_mtime_ns) != (item.get("inode"), item.get("mtime_ns")) \
                    and _sha256(file) != item.get("sha256"):
                return f"has changed since it was written ({file.name}: content)"
        except OSError as exc:
            return f"cannot be read ({exc.strerror or exc})"
    return None


class CacheFull(OSError):
    """An entry could not be written because the cache's disk has no room: the one line to say,
    naming the folder and SHIWU_CACHE (the temporary file is removed by then)."""

    def __str__(self) -> str:
        return self.strerror


@contextmanager
def _room_checked(target: Path) -> Iterator[None]:
    """Turn a write into the cache that failed for want of room into ``CacheFull``. The
    runtimes' own writers do not all say ENOSPC (OpenVINO: "iostream error"), so any failure
    with the cache's disk full at that moment (before the temporary file goes) counts too."""
    try:
        yield
    except CacheFull:
        raise
    except Exception as exc:
        full = isinstance(exc, OSError) and exc.errno in FULL_ERRNOS
        if not full and is_cached(target):
            try:
                full = os.statvfs(Path(target).parent).f_bavail == 0
            except OSError:
                full = False
        if not full or not is_cached(target):
            raise
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else os.strerror(errno.ENOSPC)
        raise CacheFull(getattr(exc, "errno", None) or errno.ENOSPC,
                        f"the cache folder {cache_dir()} has no room for {Path(target).name} ({reason}): "
                        "free space there, or set SHIWU_CACHE to a folder on a disk with room") from None


@contextmanager
def atomic_output(target: Path) -> Iterator[Path]:
    """fsutil.atomic_output, plus: a cache entry gets its record, written before the rename so
    that an entry in place always has one; a disk without room is ``CacheFull``."""
    target = _write_target(target)
    _clear(target)
    with fsutil.atomic_output(target) as tmp, _room_checked(target):
        yield tmp
        seal(target, written=[tmp])


@contextmanager
def ir_output(target: Path) -> Iterator[Path]:
    """Like ``atomic_output`` for an OpenVINO IR entry (``target`` the .xml): yields the .xml
    path to save into, in a private folder beside the entry; the .bin is moved first, the record
    written, the .xml last, so an .xml in the cache always has its weights and record."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=fsutil.TEMP_PREFIX) as tmp, \
            _room_checked(target):
        xml = Path(tmp) / "model.xml"
        yield xml
        shutil.move(str(xml.with_suffix(".bin")), target.with_suffix(".bin"))
        seal(target, written=[xml, target.with_suffix(".bin")])
        shutil.move(str(xml), target)


def is_cached(path: Path) -> bool:
    """Whether ``path`` is one of shiwu's cache entries (never a file of the user's)."""
    try:
        return Path(path).resolve().is_relative_to(cache_dir().resolve())
    except OSError:
        return False


def _clear(path: Path) -> None:
    """Remove a folder (or dangling link) squatting on a cache file's name."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink() and is_cached(path):
        shutil.rmtree(path, ignore_errors=True)


def discard(path: Path) -> None:
    """Remove a corrupt or stale cache entry (its companions and record too) so the caller can
    rebuild it. Files outside the cache (the user's own model.onnx) are never touched."""
    path = Path(path)
    if not is_cached(path.parent):  # the folder, not the file: a link in the cache is removed, never followed
        return
    for file in _companions(path) + [_record_path(path)]:
        try:
            if file.is_dir() and not file.is_symlink():
                shutil.rmtree(file)
            else:
                file.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            _warn_once(f"cannot remove the cache file {file} ({exc.strerror or exc})")
