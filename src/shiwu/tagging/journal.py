"""What a run already tagged, so a run that was interrupted (Ctrl-C, kill -9, power) continues
where it stopped without recognising the tagged photos again, as ``shiwu batch --resume`` does.

One SQLite file in shiwu's cache (``$SHIWU_CACHE``, else ``~/.cache/shiwu``: tag-journal.sqlite), keyed by
the photo's identity (its real path, or the ``file://`` URI of its bytes when the name is not
UTF-8, as ``shiwu batch`` keys its rows: ``shiwu.filenames``) and the settings (model, thresholds,
languages, where the keywords go). A photo counts as done while it and its sidecar are exactly
as the run left them (size, mtime): edit either and it is tagged again. The journal only saves
time: a photo that is recognised again gets the same keywords, which are already there, so
nothing is rewritten.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

from ..filenames import is_utf8, lossless

SCHEMA = """CREATE TABLE IF NOT EXISTS tagged (
    photo TEXT NOT NULL, settings TEXT NOT NULL, state TEXT NOT NULL, labels TEXT NOT NULL,
    PRIMARY KEY (photo, settings))"""


def default_location() -> Path:
    from ..cache import cache_dir

    return cache_dir() / "tag-journal.sqlite"


def identity(photo: str | os.PathLike) -> str:
    """``photo``'s identity as text SQLite and JSON take: the real path, or the ``file://`` URI
    of its bytes when the name is not UTF-8 (as ``batch.sources.image_key``, without importing
    the batch engine)."""
    return lossless(os.path.realpath(photo))


def _state(*paths: Path) -> str:
    parts = []
    for path in paths:
        try:
            info = os.stat(path)
            parts.append([info.st_size, info.st_mtime_ns])
        except OSError:
            parts.append(None)
    return json.dumps(parts)


class Journal:
    def __init__(self, settings: dict, location: Path | None = None):
        self.settings = json.dumps(settings, sort_keys=True, ensure_ascii=False)
        if not is_utf8(self.settings):
            # a model or gallery folder whose name is not UTF-8: SQLite takes only UTF-8 text, and
            # \udcNN escapes keep the key lossless (other settings keep the key they always had)
            self.settings = json.dumps(settings, sort_keys=True)
        self.location = location or default_location()
        try:
            self.location.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.location, timeout=30)
            self._db.execute(SCHEMA)
        except sqlite3.Error:
            self._db = None  # an unusable cache costs time, never keywords: run without it

    def done(self, photo: Path, target: Path) -> list[str] | None:
        """The labels written last time, when ``photo`` and ``target`` are as that run left them."""
        if self._db is None:
            return None
        row = self._db.execute("SELECT state, labels FROM tagged WHERE photo = ? AND settings = ?",
                               (identity(photo), self.settings)).fetchone()
        if row and row[0] == _state(photo, target):
            return json.loads(row[1])
        return None

    def record(self, photo: Path, target: Path, labels: list[str]) -> None:
        if self._db is None:
            return
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO tagged VALUES (?, ?, ?, ?)",
                             (identity(photo), self.settings, _state(photo, target),
                              json.dumps(labels, ensure_ascii=False)))

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
