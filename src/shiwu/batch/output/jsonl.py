"""JSON Lines results: one row a line, appended batch by batch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterable

from ...filenames import readable_values
from .appendfile import AppendFile
from .errors import OutputError
from .resume import ResumeState


def encode_row(row: dict) -> bytes:
    """One line of UTF-8 JSON. Strings that cannot be UTF-8 (a file name that is not, inside an
    error message) are written readable (``filenames.readable``); the row's identity is already
    lossless text (``filenames.lossless``)."""
    text = json.dumps(row, ensure_ascii=False) + "\n"
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return (json.dumps(readable_values(row), ensure_ascii=False) + "\n").encode("utf-8")


def scan_jsonl(path: Path, on_row: Callable[[dict], None]) -> int:
    """Call ``on_row`` with each complete row of a JSON Lines file, in order; return the byte
    offset where the complete rows end.

    Only the last line may be incomplete (a kill in the middle of a write); a bad line
    followed by good ones means the file was damaged some other way, and is an error.
    """
    offset = good = 0
    bad_line = None
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, 1):
            offset += len(raw)
            complete = raw.endswith(b"\n")
            if complete and not raw.strip():
                continue  # a blank line
            row = None
            if complete:
                try:
                    row = json.loads(raw)
                except ValueError:
                    pass
            if not isinstance(row, dict) or not isinstance(row.get("image"), str):
                bad_line = bad_line or number
                continue
            if bad_line is not None:
                raise OutputError(f"line {bad_line} of {path} is not a result row; remove it, "
                                  "then resume")
            on_row(row)
            good = offset
    return good


class JsonlWriter(ResumeState):
    kind = "jsonl"

    def __init__(self, path: Path, *, topk: int, resume: bool = False, overwrite: bool = False,
                 what: str = "", output: Path | None = None):
        super().__init__(path)
        self.topk = topk
        self.file = AppendFile(path, resume=resume, overwrite=overwrite, what=what, output=output)
        self.ranks: set[int] = set()   # predictions per recognised row
        if resume:
            try:
                self.file.cut(scan_jsonl(path, self._read_back))
            except OutputError:
                self.file.close()
                raise
            if self.ranks and self.ranks != {topk}:
                self.file.close()
                raise OutputError(
                    f"{path} has rows with {', '.join(map(str, sorted(self.ranks)))} predictions, "
                    f"not --topk {topk}; resume with the --topk of the first run, or write a new "
                    "file")

    def _read_back(self, row: dict) -> None:
        self.seen(self.key_of(row), row.get("model"), bool(row.get("error")))
        if not row.get("error") and isinstance(row.get("predictions"), list):
            self.ranks.add(len(row["predictions"]))

    def drop(self, keys: set[str]) -> int:
        """Remove the rows of these images (``--retry-failed``), before they are done again."""
        keys = keys & self.done
        if not keys:
            return 0
        kept: list[bytes] = []
        scan_jsonl(self.path, lambda row: kept.append(encode_row(row))
                   if self.key_of(row) not in keys else None)
        self.file.replace_with(kept)
        return len(self.forget(keys))

    def write(self, rows: Iterable[dict]) -> None:
        lines = [encode_row(row) for row in rows]
        if lines:
            self.file.write(b"".join(lines), rows=len(lines))

    def close(self) -> None:
        self.file.close()
