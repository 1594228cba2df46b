"""What a results file already holds, shared by every format: the row key that says which image
a row is about, and the sets ``--resume`` and ``--retry-failed`` work from."""

from __future__ import annotations

import os
from pathlib import Path

from .schema import PATH_COLUMN


def row_key(image: str, results_folder: Path) -> str:
    """The identity (``sources.image_key``) of an image named in a results file.

    An absolute path is resolved as it is. A relative one is resolved from the current folder,
    like the paths of this run; if nothing is there, from the results file's folder, where a
    run started in another folder most often wrote it. So a run from ``/data`` that wrote
    ``photos/a.jpg`` into ``/data/out.jsonl`` is matched by ``--resume`` from ``/data/photos``.
    """
    from ..sources import image_key

    if not os.path.isabs(image) and not os.path.lexists(image):
        beside = os.path.join(results_folder, image)
        if os.path.lexists(beside):
            return image_key(beside)
    return image_key(image)


class ResumeState:
    """The images a results file holds: ``done`` (their identities), ``failed`` (those whose
    row has an error), ``models`` (that wrote them) and ``rows_before`` (rows read back)."""

    def __init__(self, path: Path):
        self.path = path
        self.done: set[str] = set()
        self.failed: set[str] = set()
        self.models: set[str] = set()
        self.rows_before = 0
        self._results_folder: Path | None = None

    @property
    def failed_before(self) -> int:
        return len(self.failed)

    def key(self, image: str, path: str | None = None) -> str:
        """The identity of a row: its ``path`` column when it has one (every file written since
        that column exists), else what its ``image`` spelling resolves to."""
        if path:
            return path
        if self._results_folder is None:  # resolved once, not per row
            self._results_folder = self.path.resolve().parent
        return row_key(image, self._results_folder)

    def key_of(self, row: dict) -> str:
        return self.key(row["image"], row.get(PATH_COLUMN))

    def seen(self, key: str, model: str | None, failed: bool) -> None:
        """Record a row read back; a later row of the same image replaces an earlier one."""
        self.done.add(key)
        if model:
            self.models.add(model)
        self.rows_before += 1
        if failed:
            self.failed.add(key)
        else:
            self.failed.discard(key)

    def forget(self, keys: set[str]) -> set[str]:
        """Take these images out of the sets (``--retry-failed``); returns those that were in."""
        keys = keys & self.done
        self.done -= keys
        self.failed -= keys
        return keys
