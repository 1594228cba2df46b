"""CSV results in UTF-8 with a byte-order mark, so that Excel shows the Chinese labels
correctly; one header, then one record per image, appended batch by batch."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Iterable

from ...filenames import readable
from .appendfile import AppendFile
from .errors import OutputError
from .resume import ResumeState
from .schema import PATH_COLUMN, columns, flatten

BOM = b"\xef\xbb\xbf"


def _encode(records) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(records)
    text = buffer.getvalue()
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a name that is not UTF-8 in an error message: shown readable
        return readable(text).encode("utf-8")


class CsvWriter(ResumeState):
    kind = "csv"

    def __init__(self, path: Path, *, topk: int, resume: bool = False, overwrite: bool = False):
        super().__init__(path)
        self.topk = topk
        self.columns = columns(topk)
        self.file = AppendFile(path, resume=resume, overwrite=overwrite)
        if resume:
            try:
                self._resume()
            except OutputError:
                self.file.close()
                raise

    def _records(self):
        with open(self.path, "rb") as handle:
            text = handle.read().decode("utf-8", errors="replace").lstrip("\ufeff")
        return csv.reader(io.StringIO(text, newline=""), strict=True)

    def drop(self, keys: set[str]) -> int:
        """Remove the rows of these images (``--retry-failed``), before they are done again."""
        keys = keys & self.done
        if not keys:
            return 0
        records = self._records()
        header = next(records)
        image_col = header.index("image")
        path_col = header.index(PATH_COLUMN) if PATH_COLUMN in header else None
        kept = [r for r in records
                if self.key(r[image_col], path_col is not None and r[path_col]) not in keys]
        self.file.replace_with([BOM + _encode([header]), _encode(kept)])
        return len(self.forget(keys))

    def _resume(self) -> None:
        offset = 0
        ended_newline = True

        def lines():
            nonlocal offset, ended_newline
            with open(self.path, "rb") as handle:
                for index, raw in enumerate(handle):
                    offset += len(raw)
                    ended_newline = raw.endswith(b"\n")
                    if index == 0 and raw.startswith(BOM):
                        raw = raw[3:]
                    yield raw.decode("utf-8", errors="replace")

        good = 0
        bad_record = None
        reader = csv.reader(lines(), strict=True)
        image_col = model_col = error_col = path_col = None
        while True:
            try:
                record = next(reader)
            except StopIteration:
                break
            except csv.Error:  # only possible at the end: a quoted field cut off by the kill
                bad_record = bad_record or reader.line_num
                break
            if image_col is None:  # the header
                if not ended_newline:
                    break
                if record == columns(self.topk, with_path=False):
                    self.columns = record  # an earlier version's file: continue it as it is
                if record != self.columns:
                    raise OutputError(
                        f"{self.path} has other columns than --topk {self.topk} gives "
                        f"({len(record)} instead of {len(self.columns)}); resume with the --topk "
                        "of the first run, or write a new file")
                image_col, model_col = record.index("image"), record.index("model")
                error_col = record.index("error_type")
                path_col = record.index(PATH_COLUMN) if PATH_COLUMN in record else None
                good = offset
                continue
            if not ended_newline or len(record) != len(self.columns):
                bad_record = bad_record or reader.line_num
                continue
            if bad_record is not None:
                raise OutputError(f"line {bad_record} of {self.path} is not a complete result row; "
                                  "remove it, then resume")
            key = self.key(record[image_col], path_col is not None and record[path_col])
            self.seen(key, record[model_col], bool(record[error_col]))
            good = offset
        self.file.cut(good)

    def write(self, rows: Iterable[dict]) -> None:
        records = []
        for row in rows:
            flat = flatten(row, self.topk)
            records.append(["" if flat[c] is None else flat[c] for c in self.columns])
        if records:
            header = BOM + _encode([self.columns]) if self.file.empty else b""
            self.file.write(header + _encode(records), rows=len(records))

    def close(self) -> None:
        self.file.close()
