"""The metadata library: exiftool, kept running (``-stay_open``) through pyexiftool.

exiftool rather than exiv2's bindings because it writes XMP into every format a photo library
holds, HEIC and AVIF included (exiv2 reads ISO BMFF files but cannot write them), and it is the
reference the other tools are checked against. It is a Debian/Ubuntu/Homebrew package
(``libimage-exiftool-perl`` / ``exiftool``), so ``shiwu tag`` needs it installed and says so
when it is not.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import warnings
from contextlib import contextmanager

from .keywords import Keywords

log = logging.getLogger(__name__)

SUBJECT, HIERARCHY, IPTC = "XMP-dc:Subject", "XMP-lr:HierarchicalSubject", "IPTC:Keywords"
# what a keyword write changes besides the keywords: the file's layout (offsets and sizes
# move when a block grows; HEIC keeps EXIF inside its media data, which exiftool rewrites, and
# the pixels are compared decoded), the tool's own signature and IPTC's bookkeeping
WRITE_EFFECTS = {"StripOffsets", "TileOffsets", "ThumbnailOffset", "PreviewImageStart",
                 "JpgFromRawStart", "OtherImageStart", "MediaData", "MediaDataSize", "MediaDataOffset",
                 "CurrentIPTCDigest", "IPTCDigest", "XMPToolkit", "ApplicationRecordVersion",
                 "EnvelopeRecordVersion", "CodedCharacterSet"}
WEBP_XMP_FLAG = 0x04  # VP8X: "this file has XMP", set by the write itself
INSTALL = ("shiwu tag needs exiftool: apt-get install libimage-exiftool-perl (Debian/Ubuntu), "
           "brew install exiftool (macOS), or https://exiftool.org")


class ExifToolMissing(RuntimeError):
    """exiftool is not installed (or not runnable)."""


class MetadataError(RuntimeError):
    """exiftool refused a file or a write; the message is exiftool's own."""


def _as_list(value) -> tuple[str, ...]:
    if value is None:
        return ()
    values = value if isinstance(value, list) else [value]
    return tuple(str(v) for v in values)


class ExifTool:
    """One exiftool process for a whole run."""

    def __init__(self, executable: str | None = None):
        found = executable or shutil.which("exiftool")
        if not found:
            raise ExifToolMissing(INSTALL)
        import exiftool

        self._module = exiftool
        self._executable = found
        self._tool = None
        self._start()

    def _start(self) -> None:
        try:
            # UTF-8 whatever the locale: exiftool reads and writes keywords as UTF-8 (its default
            # -charset), and a zh_CN.GBK locale would otherwise send them as GBK
            self._tool = self._module.ExifToolHelper(executable=self._executable, encoding="utf-8",
                                                     common_args=["-G1", "-n", "-charset", "filename=utf8"])
            with _own_session(self._module):
                self._tool.run()
        except (OSError, self._module.exceptions.ExifToolException) as exc:
            raise ExifToolMissing(f"{INSTALL} ({exc})") from None

    def close(self) -> None:
        with _quiet():
            if self._tool is not None and self._tool.running:
                self._tool.terminate()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def _execute(self, *params: str | bytes, failed: str = "exiftool failed") -> str:
        """exiftool's output as text. Bytes both ways (pyexiftool's ``raw_bytes``): exiftool
        names a file that is not UTF-8 by its own bytes in its messages, which pyexiftool's strict
        decoding would turn into a crash; decoded as Python decodes file names (surrogateescape),
        such a message shows the name like every other (``filenames.readable`` when printed)."""
        try:
            with _quiet():
                out = self._tool.execute(*params, raw_bytes=True)
        except self._module.exceptions.ExifToolExecuteError as exc:
            raise MetadataError(_first_line(_text(exc.stderr)) or f"{failed} ({exc.returncode})") from None
        except self._module.exceptions.ExifToolException as exc:
            self._restart()
            raise MetadataError(f"exiftool failed: {exc}") from None
        return _text(out)

    def _json(self, *params: str | bytes) -> dict:
        out = self._execute("-j", *params)
        try:
            # numbers kept as exiftool printed them: a keyword "1.50" must not come back as "1.5"
            rows = json.loads(out, parse_float=str, parse_int=str)
        except ValueError:
            # nothing, or not JSON: this exiftool is out of step with us; never read as "no keywords"
            self._restart()
            raise MetadataError(f"exiftool printed no metadata ({_first_line(out) or 'nothing'})") from None
        return rows[0] if rows and isinstance(rows[0], dict) else {}

    def _restart(self) -> None:
        # exiftool died (killed, or a write limit ended it): the next photo gets a new one
        try:
            with _quiet():
                self._tool.terminate()
        except Exception:  # noqa: BLE001 - a dead process may fail to terminate in any way
            pass
        self._start()

    def keywords(self, path: str | os.PathLike, *, iptc: bool) -> Keywords:
        tags = [f"-{SUBJECT}", f"-{HIERARCHY}"] + ([f"-{IPTC}", "-charset", "iptc=utf8"] if iptc else [])
        row = self._json(*tags, _argument(path))
        return Keywords(_as_list(row.get(SUBJECT)), _as_list(row.get(HIERARCHY)),
                        _as_list(row.get(IPTC)) if iptc else None)

    def metadata(self, path: str | os.PathLike) -> dict:
        """Every tag exiftool reads, except the file system's and the ones a keyword write
        changes by itself; what must stay equal when only the keywords are written."""
        row = self._json("-a", "-u", _argument(path))
        ours = {SUBJECT, HIERARCHY, IPTC}
        kept = {key: value for key, value in row.items()
                if key != "SourceFile" and key not in ours
                and not key.startswith(("System:", "ExifTool:"))
                and key.split(":")[-1] not in WRITE_EFFECTS}
        if str(kept.get("RIFF:WebP_Flags", "")).isdigit():
            # the other flags (ICC, alpha, EXIF) must stay
            kept["RIFF:WebP_Flags"] = str(int(kept["RIFF:WebP_Flags"]) & ~WEBP_XMP_FLAG)
        return kept

    def write(self, path: str | os.PathLike, keywords: Keywords) -> None:
        """Set the three lists of ``path`` (edited in place: the caller gives a temporary copy,
        or a new .xmp file exiftool creates)."""
        args = ["-overwrite_original"]
        for value in (*keywords.subject, *keywords.hierarchy, *(keywords.iptc or ())):
            _one_line(value, "keyword")
        for tag, values in ((SUBJECT, keywords.subject), (HIERARCHY, keywords.hierarchy)):
            args += [f"-{tag}="] + [f"-{tag}={v}" for v in values]
        if keywords.iptc is not None:
            args += ["-charset", "iptc=utf8", "-IPTC:CodedCharacterSet=UTF8", f"-{IPTC}="]
            args += [f"-{IPTC}={v}" for v in keywords.iptc]
        self._execute(*args, _argument(path), failed="exiftool could not write")
        error = _text(self._tool.last_stderr)
        if "Error" in error:  # exit status 0, yet the file was refused
            raise MetadataError(_first_line(error))


@contextmanager
def _quiet():
    """pyexiftool warns (UserWarning, on stderr) when it finds exiftool dead; shiwu says what
    that means for the photo instead (MetadataError) and starts another."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module=r"exiftool\b")
        yield


_STARTING = threading.Lock()


@contextmanager
def _own_session(module):
    """exiftool started in a session of its own, so that a Ctrl-C at the terminal (SIGINT to the
    whole foreground group) or a SIGTERM to shiwu's process group reaches shiwu, which finishes
    the photo in hand and stops, and not exiftool in the middle of a command (pyexiftool would
    then wait for its answer forever). pyexiftool has no option for it: its child set-up, which
    makes exiftool die with shiwu (Linux's parent-death signal), is extended by setsid, only
    where that set-up exists (elsewhere exiftool must stay in shiwu's group to end with it)."""
    with _STARTING:  # one start at a time: the set-up is pyexiftool's module-wide function
        inner = getattr(getattr(module, "exiftool", None), "_set_pdeathsig", None)
        if inner is None or not hasattr(os, "setsid"):
            yield
            return

        def with_session(sig):
            die_with_parent = inner(sig)
            if die_with_parent is None:
                return None

            def child():
                os.setsid()
                return die_with_parent()
            return child

        module.exiftool._set_pdeathsig = with_session
        try:
            yield
        finally:
            module.exiftool._set_pdeathsig = inner


def _argument(path: str | os.PathLike) -> bytes:
    """Absolute: exiftool keeps the folder it was started in, and "-photo.jpg" would be an option.
    Bytes: the name's own bytes, which is what exiftool opens; a name that is not UTF-8 (GBK, say)
    is a str with surrogates (PEP 383), which pyexiftool's strict encoding would refuse."""
    raw = os.fsencode(os.path.abspath(os.fspath(path)))
    _one_line(raw, "file name")
    return raw


def _one_line(value: str | bytes, what: str) -> None:
    """-stay_open reads one argument per line and has no escape for a line break: a name or a
    keyword with one would become several arguments, options among them (a photo named
    "a\n-all=\n.jpg" once read as "-all=", and a sidecar was written into the current folder)."""
    if any(c in value for c in ((b"\n", b"\r") if isinstance(value, bytes) else ("\n", "\r"))):
        raise MetadataError(f"exiftool cannot take a {what} with a line break in it: rename it")


def _text(raw: bytes | str | None) -> str:
    if isinstance(raw, bytes):
        return raw.decode("utf-8", "surrogateescape")
    return raw or ""


def _first_line(text) -> str:
    for line in (text or "").splitlines():
        if line.strip() and not line.startswith("Warning: [minor]"):
            return line.strip()
    return ""
