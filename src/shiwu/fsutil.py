"""Files written so that a reader, or a process killed at any moment, sees the old file or the
new one and never half of one: the one temp-file + fsync + rename of the project.

Temporary files start with ``TEMP_PREFIX`` in the target's own folder (a rename is atomic only
within one file system), so a folder's strays from a killed writer are recognisable and can be
cleaned up, and hidden, so nothing that lists photos or examples ever takes one for data.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

try:
    import fcntl
except ImportError:  # not POSIX: scratch folders of killed processes are not recognised
    fcntl = None

TEMP_PREFIX = ".tmp-"
# a live writer's temporary file is seconds to minutes old; an hour-old one belongs to a killed writer
STRAY_AGE_SECONDS = 3600
# a scratch folder whose lock nobody holds is a killed process's once it is older than this (the
# moment between making a folder and locking it)
SCRATCH_GRACE_SECONDS = 60


def _umask() -> int:
    # os.umask can only be read by setting it; set it back at once (single call site, cheap).
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_folder(folder: str) -> None:
    """Make the rename itself durable (a crash right after os.replace could otherwise lose it)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems (and Windows) refuse fsync on a folder: the data is synced
    finally:
        os.close(fd)


@contextmanager
def atomic_output(target: str | os.PathLike, *, mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; when the block ends without an exception the
    file is fsynced and renamed onto ``target``, otherwise removed.

    The file gets ``mode`` (default: what ``open()`` would give, 0o666 less the umask), not
    mkstemp's 0o600, so a manifest is as readable as the table written beside it.
    """
    target = Path(target)
    folder = target.parent if str(target.parent) else Path(".")
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=folder, prefix=TEMP_PREFIX, suffix=f"-{target.name}"[-64:])
    os.close(fd)
    temporary = Path(name)
    try:
        yield temporary
        os.chmod(temporary, (0o666 & ~_umask()) if mode is None else mode)
        with open(temporary, "rb+") as file:
            os.fsync(file.fileno())
        os.replace(temporary, target)
        fsync_folder(os.fspath(folder))
    finally:
        if temporary.exists():
            temporary.unlink()


def atomic_write(target: str | os.PathLike, data: bytes | str, *, mode: int | None = None) -> None:
    """Write ``data`` (str is written as UTF-8) to ``target`` atomically and durably."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_output(target, mode=mode) as temporary:
        with open(temporary, "wb") as file:
            file.write(payload)


class LockTimeout(OSError):
    """Another process held the lock for longer than the caller would wait."""


@contextmanager
def folder_lock(folder: str | os.PathLike, *, timeout: float = 120.0) -> Iterator[bool]:
    """Hold an exclusive lock on ``folder`` (``flock`` on the folder itself: nothing is created
    beside the user's files) for the block, so that two processes that both read, change and
    replace a file in it take turns instead of each losing the other's change. Yields whether
    the lock is held: where locks do not exist (Windows) or the file system refuses them (some
    network mounts), the block runs unlocked and the caller relies on its own checks. Waits at
    most ``timeout`` seconds for another holder (raises LockTimeout); a signal handler runs
    while it waits."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield False
        return
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        yield False  # a folder that cannot be opened for reading (no r permission)
        return
    try:
        deadline = time.monotonic() + timeout
        pause = 0.002
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held = True
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LockTimeout(errno.EWOULDBLOCK, f"another process has kept {folder} locked for "
                                                         f"{timeout:.0f} s") from None
                time.sleep(pause)
                pause = min(pause * 2, 0.05)
            except OSError:
                held = False  # ENOLCK, EOPNOTSUPP, EBADF: a file system without these locks
                break
        yield held
    finally:
        os.close(fd)  # releases the lock


def out_of_space(folder: str | os.PathLike, needed: int = 0) -> bool:
    """Whether ``folder``'s file system has less than ``needed`` bytes (plus 64 KiB) or no inode
    left: what a failed write by another program (exiftool says only "Error writing output file")
    most likely met. Unknown (no statvfs) reads as False."""
    try:
        info = os.statvfs(folder)
    except (OSError, AttributeError):
        return False
    blocks = info.f_bfree if hasattr(os, "geteuid") and os.geteuid() == 0 else info.f_bavail
    no_inodes = info.f_files > 0 and (info.f_ffree if hasattr(os, "geteuid") and os.geteuid() == 0
                                      else info.f_favail) == 0
    return blocks * info.f_frsize < needed + 65536 or no_inodes


def stray_temporaries(folder: str | os.PathLike, *, of: str | None = None) -> list[Path]:
    """Temporary files a killed writer left in ``folder`` (not its subfolders); ``of``: only
    those ``atomic_output`` made for the file named so (what may be removed in a folder that is
    the user's, beside their photos)."""
    suffix = None if of is None else f"-{of}"[-64:]
    try:
        return sorted(p for p in Path(folder).iterdir()
                      if p.name.startswith(TEMP_PREFIX) and (suffix is None or p.name.endswith(suffix))
                      and p.is_file())
    except OSError:
        return []


def remove_stray_temporaries(folder: str | os.PathLike, *, older_than: float = STRAY_AGE_SECONDS,
                             of: str | None = None) -> list[Path]:
    """Remove ``stray_temporaries(folder, of=of)`` older than ``older_than`` seconds (a live
    writer's are newer); what went. A file that cannot be removed is left: harmless."""
    removed, now = [], time.time()
    for stray in stray_temporaries(folder, of=of):
        try:
            if now - stray.stat().st_mtime > older_than:
                stray.unlink()
                removed.append(stray)
        except OSError:
            continue
    return removed


def cannot_write(target: str | os.PathLike, *, folder: bool = False, parents: bool = False) -> str | None:
    """Why ``target`` cannot be written, or None when it can: for commands to ask before their slow
    work, so that an unwritable output fails at once instead of after an hour of recognising.

    ``folder``: ``target`` is a folder the command fills; else a file, written beside its siblings
    (temporary files, journals), so its folder must take new files too. ``parents``: the command
    creates missing folders on the way, so the nearest existing one must take new folders.

    Permissions alone do not tell (root passes them where the kernel still refuses, as in /sys),
    so a folder is tried by creating and removing an empty temporary file in it, and an existing
    file by opening it for appending, which changes nothing.
    """
    path = Path(target)
    if path.is_dir() and not folder:
        return "it is a folder; give a file name"
    if path.exists() and not path.is_dir() and folder:
        return "it is a file, not a folder"
    if path.exists() and not path.is_dir():
        if not os.access(path, os.W_OK):
            return "permission denied (the file is read-only)"
        if not path.is_file():
            return None  # /dev/stdout, a FIFO: written as they are, never replaced
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_APPEND))
        except OSError as exc:
            return _reason(exc)
    home = path if folder and path.is_dir() else (path.parent if str(path.parent) else Path("."))
    while parents and not home.exists() and home != home.parent:
        home = home.parent
    if not home.exists():
        return f"the folder {home} does not exist"
    if not home.is_dir():
        return f"{home} is a file, not a folder"
    if not os.access(home, os.W_OK | os.X_OK):
        return f"permission denied (no write access to the folder {home})"
    try:
        fd, probe = tempfile.mkstemp(dir=home, prefix=TEMP_PREFIX, suffix="-write-test")
    except OSError as exc:
        return f"{_reason(exc)} (no write access to the folder {home})"
    os.close(fd)
    try:
        os.unlink(probe)
    except OSError:
        pass  # a folder that takes files but will not let them go: the output can still be written
    return None


def _reason(exc: OSError) -> str:
    # "Permission denied" reads as the middle of a sentence after "cannot write PATH: "
    text = exc.strerror or str(exc)
    return text[:1].lower() + text[1:]


@contextmanager
def scratch_folder(parent: str | os.PathLike, prefix: str) -> Iterator[Path]:
    """A new folder in ``parent`` for one process's temporary files, removed on the way out.
    The process holds a lock on it while it lives (released by the OS however the process
    ends, kill -9 included), so the folders of killed processes are told from live ones and
    removed: each call first removes those (``remove_stray_scratch``)."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    remove_stray_scratch(parent, prefix)
    folder = Path(tempfile.mkdtemp(dir=parent, prefix=prefix))
    fd = _lock_folder(folder, wait=True)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        if fd is not None:
            os.close(fd)  # also releases the lock


def remove_stray_scratch(parent: str | os.PathLike, prefix: str) -> list[Path]:
    """Remove the ``scratch_folder``s in ``parent`` whose process is gone (nobody holds their
    lock); what went. Without file locks (not POSIX) nothing is removed."""
    removed, now = [], time.time()
    if fcntl is None:
        return removed
    try:
        folders = [p for p in Path(parent).iterdir() if p.name.startswith(prefix) and p.is_dir()
                   and not p.is_symlink()]
    except OSError:
        return removed
    for folder in folders:
        try:
            if now - folder.stat().st_mtime < SCRATCH_GRACE_SECONDS:
                continue
            fd = _lock_folder(folder, wait=False)
        except OSError:
            continue
        if fd is None:
            continue  # a live process's
        try:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
        finally:
            os.close(fd)
    return removed


def _lock_folder(folder: Path, *, wait: bool) -> int | None:
    """An open descriptor of ``folder`` holding an exclusive lock on it; None when ``wait`` is
    False and another process holds it (or there are no file locks here)."""
    if fcntl is None:
        return None
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd
