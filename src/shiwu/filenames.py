"""File names that are not UTF-8: a lossless form for identities and a readable form for people.

A POSIX file name is bytes. Python gives a name that is not valid UTF-8 (a zip made on Chinese
Windows carries GBK names: ``'照片'.encode('gbk')`` is ``b'\\xd5\\xd5\\xc6\\xac'``) to us as a
``str`` with lone surrogates (``'\\udcd5\\udcd5\\udcc6\\udcac'``, PEP 383). Such a str opens the
file, but cannot be written as UTF-8: JSON, CSV, Parquet, SQLite and HTTP all refuse it.

So every name that leaves the process has two forms:

* ``readable(name)``: valid text for people (``image`` in result rows, ``path`` in index rows):
  the bytes that are not UTF-8 are shown as ``\\xNN``. Not reversible, never used to find a file.
* ``lossless(path)``: the identity (``path`` in result rows, ``real_path`` in index rows): the
  path itself when it is UTF-8 (so every such name and every file written before is unchanged),
  otherwise an RFC 8089 ``file://`` URI of its bytes, percent-encoded
  (``file:///data/%D5%D5%C6%AC.jpg``). An identity is an absolute path, which never starts with
  ``file:``, so the two kinds cannot collide; ``os_path`` turns either back into the name the OS
  takes.
"""

from __future__ import annotations

import os
from urllib.parse import quote, unquote_to_bytes

URI_PREFIX = "file://"


def is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def readable(name: str) -> str:
    """``name`` as valid text: bytes that are not UTF-8 as ``\\xNN`` (e.g. ``\\xd5\\xd5.jpg``)."""
    if is_utf8(name):
        return name
    try:
        raw = name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate not made from a byte (Windows, or a bad str)
        return name.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def lossless(path: str) -> str:
    """The identity of ``path`` as valid text: itself if UTF-8, else the ``file://`` URI of its
    bytes. ``os_path(lossless(p)) == p`` for every absolute path."""
    if is_utf8(path):
        return path
    raw = os.fsencode(path)
    uri = quote(raw, safe="/")
    return URI_PREFIX + uri if uri.startswith("/") else "file:" + uri


def os_path(text: str) -> str:
    """The name the OS takes for an identity written by ``lossless``."""
    if not text.startswith("file:"):
        return text
    rest = text[len(URI_PREFIX):] if text.startswith(URI_PREFIX) else text[len("file:"):]
    return os.fsdecode(unquote_to_bytes(rest))


def readable_values(value):
    """``value`` (a row: dicts, lists, strings) with every string made ``readable``: what goes
    into a UTF-8 file when a name (in an error message, say) was not UTF-8."""
    if isinstance(value, str):
        return readable(value)
    if isinstance(value, dict):
        return {key: readable_values(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [readable_values(item) for item in value]
    return value
