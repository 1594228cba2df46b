"""Result files for ``shiwu batch``: JSON Lines, CSV or Parquet, chosen by the file extension.

Every writer appends the rows of each batch and flushes them before the next batch starts, so a
run killed at any moment loses at most the batch in flight. Opening with ``resume=True`` reads
back which images are already done, and cuts off an incomplete last row that a kill left behind,
so the resumed run adds exactly the missing rows.

Rows are the result JSON of docs/architecture.md. CSV and Parquet flatten them into columns: ``image``, then
``label_1, label_en_1, index_1, score_1`` ... up to ``topk``, then ``model, backend, precision,
error_type, error_message``.

Parquet files cannot be appended to, and a Parquet file cut short by a kill has no footer and
cannot be read at all. So the Parquet writer journals its rows, per batch, as JSON Lines in
``OUT.partial.jsonl`` beside the output, and writes the Parquet file when the run ends (also on
Ctrl-C): old rows plus journal, into a temporary file renamed over the output, then the journal
is deleted. A resumed run picks up both the Parquet file and the journal, and drops journal rows
the Parquet file already has (a kill between the rename and the delete).
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import sys
from pathlib import Path
from typing import Iterable

try:
    import fcntl
except ImportError:  # not POSIX: no lock, the rest works
    fcntl = None

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
PREDICTION_FIELDS = ("label", "label_en", "index", "score")
TRAILING_COLUMNS = ("model", "backend", "precision", "error_type", "error_message")
# The image's identity, its resolved real path (``sources.image_key``), beside ``image`` as the
# user spelled it: --resume matches it from any folder, and readers find the file from anywhere.
# Files written before it existed have no such column; they are resumed by ``row_key``.
PATH_COLUMN = "path"
PARQUET_CHUNK_ROWS = 65_536


class OutputError(ValueError):
    """The output file cannot be used as asked (wrong extension, exists, locked, mismatched,
    not writable). Raised before any image is decoded."""


class OutputWriteError(OutputError):
    """Writing rows failed in the middle of a run (disk full, file too large, I/O error).

    The rows written before stay intact (a half-written batch is cut off again), so the same
    command with ``--resume`` continues once the cause is fixed."""

    def __init__(self, path, exc: BaseException):
        self.path = os.fspath(path)
        code = getattr(exc, "errno", None)
        if code in (errno.ENOSPC, errno.EDQUOT):
            reason = "no space left on the device"
        elif code == errno.EFBIG or "too large" in str(exc).lower():
            reason = "file too large (the file size limit of this system or process)"
        else:
            reason = getattr(exc, "strerror", None) or str(exc)
        self.reason = reason
        super().__init__(f"cannot write {self.path}: {reason}. The rows written before are intact; "
                         "make room, then run the same command with --resume")


def row_key(image: str, results_folder: Path) -> str:
    """The identity (``sources.image_key``) of an image named in a results file.

    An absolute path is resolved as it is. A relative one is resolved from the current folder,
    like the paths of this run; if nothing is there, from the results file's folder, where a
    run started in another folder most often wrote it. So a run from ``/data`` that wrote
    ``photos/a.jpg`` into ``/data/out.jsonl`` is matched by ``--resume`` from ``/data/photos``.
    """
    from .sources import image_key

    if not os.path.isabs(image) and not os.path.lexists(image):
        beside = os.path.join(results_folder, image)
        if os.path.lexists(beside):
            return image_key(beside)
    return image_key(image)


def _writable(path: Path) -> None:
    """Refuse, before anything is decoded, an output that cannot be written: the file itself if
    it exists, and its folder (new files, the Parquet journal and temporary files live there)."""
    folder = path.parent if str(path.parent) else Path(".")
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputError(f"cannot write {path}: permission denied (the file is read-only)")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {path}: permission denied (no write access to the "
                          f"folder {folder})")


def output_format(path: str | os.PathLike) -> str:
    suffix = Path(path).suffix.lower()
    try:
        return FORMATS[suffix]
    except KeyError:
        raise OutputError(f"cannot tell the output format of {os.fspath(path)!r}: "
                          "name it .jsonl, .csv or .parquet") from None


def columns(topk: int, with_path: bool = True) -> list[str]:
    """The flat column names for CSV and Parquet (``with_path=False``: files of earlier
    versions, without the ``path`` column)."""
    names = ["image"]
    for rank in range(1, topk + 1):
        names += [f"{field}_{rank}" for field in PREDICTION_FIELDS]
    return names + list(TRAILING_COLUMNS) + ([PATH_COLUMN] if with_path else [])


def flatten(row: dict, topk: int) -> dict:
    """One result JSON row as flat columns; missing ranks and fields are None."""
    flat: dict = {"image": row["image"]}
    predictions = row.get("predictions") or []
    for rank in range(1, topk + 1):
        prediction = predictions[rank - 1] if rank <= len(predictions) else {}
        for field in PREDICTION_FIELDS:
            flat[f"{field}_{rank}"] = prediction.get(field)
    for key in ("model", "backend", "precision"):
        flat[key] = row.get(key)
    error = row.get("error") or {}
    flat["error_type"] = error.get("type")
    flat["error_message"] = error.get("message")
    flat[PATH_COLUMN] = row.get(PATH_COLUMN)
    return flat


def open_writer(path: str | os.PathLike, *, topk: int, resume: bool = False,
                overwrite: bool = False, model: str | None = None):
    """A writer for ``path``; ``writer.done`` holds the identities (``image_key``) of the images
    already in it (after resume), ``writer.failed`` those of its rows with an error.

    Without ``resume`` or ``overwrite``, an existing non-empty output is an error: a finished
    million-image run should not disappear because a command was repeated.
    """
    if resume and overwrite:
        raise OutputError("--resume and --overwrite contradict each other; choose one")
    kind = output_format(path)
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path} is a folder; give a file name for the results")
    if path.parent and not path.parent.is_dir():
        raise OutputError(f"the folder {path.parent} does not exist")
    _writable(path)
    cls = {"jsonl": JsonlWriter, "csv": CsvWriter, "parquet": ParquetWriter}[kind]
    writer = cls(path, topk=topk, resume=resume, overwrite=overwrite)
    if model is not None and writer.models and model not in writer.models:
        writer.close()
        raise OutputError(f"{path} holds results of model {', '.join(sorted(writer.models))}, "
                          f"not {model}; resume with the same --model or write a new file")
    return writer


def _exists_nonempty(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except OSError:
        return False


def _lock(handle, path: Path) -> None:
    if fcntl is None:
        return
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise OutputError(f"another shiwu batch is writing {path}; wait for it or choose another "
                          "--out") from None


def _note(message: str) -> None:
    print(f"shiwu: {message}", file=sys.stderr)


class _AppendFile:
    """An append-only, locked file whose damaged tail (from a kill) is cut off on resume."""

    def __init__(self, path: Path, *, resume: bool, overwrite: bool, what: str = ""):
        self.path = path
        if _exists_nonempty(path) and not (resume or overwrite):
            raise OutputError(f"{path} already exists{what}: add --resume to continue it, "
                              "or --overwrite to start again")
        existed = path.exists()
        try:
            # unbuffered: a failed write (disk full) leaves nothing in a buffer that close()
            # would try to write again
            self.handle = open(path, "a+b", buffering=0)
        except OSError as exc:
            raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
        _lock(self.handle, path)
        # --overwrite empties the file at the first write, not now: if the run never gets that
        # far (the model failed to load, Ctrl-C during start-up), the old results stay.
        self.truncate_first = overwrite
        # A file that starts out empty and gets no row is removed again on close, so it does
        # not stand in the way of the next run.
        self.fresh = not existed or os.fstat(self.handle.fileno()).st_size == 0
        self.rows_written = 0

    @property
    def empty(self) -> bool:
        """Whether the next write starts the file (so a CSV header goes first)."""
        return self.truncate_first or os.fstat(self.handle.fileno()).st_size == 0

    def write(self, data: bytes, rows: int = 0) -> None:
        """Append ``data`` (whole rows) or nothing: a write that fails half-way (disk full,
        RLIMIT_FSIZE) is cut back off, so the file still ends on a complete row."""
        if self.truncate_first:
            self.handle.truncate(0)
            self.truncate_first = False
        start = os.fstat(self.handle.fileno()).st_size
        view = memoryview(data)
        try:
            while view:  # each batch reaches the OS before the next one starts
                view = view[self.handle.write(view):]
        except OSError as exc:
            try:
                self.handle.truncate(start)
            except OSError:
                pass  # resume cuts a torn last row anyway
            raise OutputWriteError(self.path, exc) from None
        self.rows_written += rows

    def replace_with(self, chunks: Iterable[bytes]) -> None:
        """Replace the whole file by ``chunks`` (written to a temporary file, locked, synced,
        renamed over it): a kill at any moment leaves the old file or the new one."""
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.rewrite.tmp")
        try:
            handle = open(tmp, "w+b", buffering=0)
        except OSError as exc:
            raise OutputError(f"cannot write {tmp}: {exc.strerror or exc}") from None
        try:
            _lock(handle, tmp)
            for chunk in chunks:
                view = memoryview(chunk)
                while view:
                    view = view[handle.write(view):]
            os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            handle.close()
            tmp.unlink(missing_ok=True)
            raise OutputWriteError(self.path, exc) from None
        old, self.handle = self.handle, handle
        old.close()
        self.handle.seek(0, os.SEEK_END)

    def cut(self, offset: int) -> None:
        size = os.fstat(self.handle.fileno()).st_size
        if offset < size:
            _note(f"dropped an incomplete last row of {self.path} ({size - offset} bytes) "
                  "left by an interrupted run")
            self.handle.truncate(offset)

    @property
    def unused(self) -> bool:
        return self.fresh and not self.rows_written

    def close(self) -> None:
        if self.handle.closed:
            return
        if self.unused:
            self.path.unlink(missing_ok=True)  # still locked: nobody else is using it
            self.handle.close()
            return
        try:
            os.fsync(self.handle.fileno())
        except OSError:
            pass
        self.handle.close()  # also releases the lock


def _scan_jsonl(path: Path, on_row) -> int:
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


class JsonlWriter:
    kind = "jsonl"

    def _key(self, image: str) -> str:
        folder = getattr(self, "_results_folder", None)
        if folder is None:  # resolved once, not per row
            folder = self._results_folder = self.path.resolve().parent
        return row_key(image, folder)

    def __init__(self, path: Path, *, topk: int, resume: bool = False, overwrite: bool = False,
                 what: str = ""):
        self.path = path
        self.topk = topk
        self.file = _AppendFile(path, resume=resume, overwrite=overwrite, what=what)
        self.done: set[str] = set()
        self.failed: set[str] = set()  # identities of rows with an error
        self.models: set[str] = set()
        self.ranks: set[int] = set()   # predictions per recognised row
        self.rows_before = 0
        if resume:
            try:
                self.file.cut(_scan_jsonl(path, self._seen))
            except OutputError:
                self.file.close()
                raise
            if self.ranks and self.ranks != {topk}:
                self.file.close()
                raise OutputError(
                    f"{path} has rows with {', '.join(map(str, sorted(self.ranks)))} predictions, "
                    f"not --topk {topk}; resume with the --topk of the first run, or write a new "
                    "file")

    @property
    def failed_before(self) -> int:
        return len(self.failed)

    def _seen(self, row: dict) -> None:
        key = row.get(PATH_COLUMN) or self._key(row["image"])
        self.done.add(key)
        if row.get("model"):
            self.models.add(row["model"])
        self.rows_before += 1
        if row.get("error"):
            self.failed.add(key)
        else:
            self.failed.discard(key)
            if isinstance(row.get("predictions"), list):
                self.ranks.add(len(row["predictions"]))

    def drop(self, keys: set[str]) -> int:
        """Remove the rows of these images (``--retry-failed``), before they are done again."""
        keys = keys & self.done
        if not keys:
            return 0
        kept: list[bytes] = []

        def keep(row: dict) -> None:
            if (row.get(PATH_COLUMN) or self._key(row["image"])) not in keys:
                kept.append((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))

        _scan_jsonl(self.path, keep)
        self.file.replace_with(kept)
        self.done -= keys
        self.failed -= keys
        return len(keys)

    def write(self, rows: Iterable[dict]) -> None:
        lines = [json.dumps(row, ensure_ascii=False) + "\n" for row in rows]
        if lines:
            self.file.write("".join(lines).encode("utf-8"), rows=len(lines))

    def close(self) -> None:
        self.file.close()


class CsvWriter:
    """CSV in UTF-8 with a byte-order mark, so that Excel shows the Chinese labels correctly."""

    kind = "csv"

    def _key(self, image: str) -> str:
        folder = getattr(self, "_results_folder", None)
        if folder is None:  # resolved once, not per row
            folder = self._results_folder = self.path.resolve().parent
        return row_key(image, folder)

    def __init__(self, path: Path, *, topk: int, resume: bool = False, overwrite: bool = False):
        self.path = path
        self.topk = topk
        self.columns = columns(topk)
        self.file = _AppendFile(path, resume=resume, overwrite=overwrite)
        self.done: set[str] = set()
        self.failed: set[str] = set()  # identities of rows with an error
        self.models: set[str] = set()
        self.rows_before = 0
        if resume:
            try:
                self._resume()
            except OutputError:
                self.file.close()
                raise

    @property
    def failed_before(self) -> int:
        return len(self.failed)

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
                if ((path_col is not None and r[path_col]) or self._key(r[image_col])) not in keys]
        self.file.replace_with([b"\xef\xbb\xbf" + self._encode([header]), self._encode(kept)])
        self.done -= keys
        self.failed -= keys
        return len(keys)

    def _encode(self, records) -> bytes:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(records)
        return buffer.getvalue().encode("utf-8")

    def _resume(self) -> None:
        offset = 0
        ended_newline = True

        def lines():
            nonlocal offset, ended_newline
            with open(self.path, "rb") as handle:
                for index, raw in enumerate(handle):
                    offset += len(raw)
                    ended_newline = raw.endswith(b"\n")
                    if index == 0 and raw.startswith(b"\xef\xbb\xbf"):
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
            key = (path_col is not None and record[path_col]) or self._key(record[image_col])
            self.done.add(key)
            if record[model_col]:
                self.models.add(record[model_col])
            self.rows_before += 1
            if record[error_col]:
                self.failed.add(key)
            else:
                self.failed.discard(key)
            good = offset
        self.file.cut(good)

    def write(self, rows: Iterable[dict]) -> None:
        records = []
        for row in rows:
            flat = flatten(row, self.topk)
            records.append(["" if flat[c] is None else flat[c] for c in self.columns])
        if records:
            header = b"\xef\xbb\xbf" + self._encode([self.columns]) if self.file.empty else b""
            self.file.write(header + self._encode(records), rows=len(records))

    def close(self) -> None:
        self.file.close()


def parquet_schema(topk: int, with_path: bool = True):
    import pyarrow as pa

    types = {"label": pa.string(), "label_en": pa.string(), "index": pa.int32(), "score": pa.float64()}
    fields = [pa.field("image", pa.string(), nullable=False)]
    for rank in range(1, topk + 1):
        fields += [pa.field(f"{name}_{rank}", kind) for name, kind in types.items()]
    fields += [pa.field(name, pa.string()) for name in TRAILING_COLUMNS]
    if with_path:
        fields.append(pa.field(PATH_COLUMN, pa.string()))
    return pa.schema(fields)


def _import_pyarrow():
    try:
        import pyarrow  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise OutputError("writing Parquet needs pyarrow: pip install 'shiwu[parquet]'") from None


class ParquetWriter:
    kind = "parquet"

    def _key(self, image: str) -> str:
        folder = getattr(self, "_results_folder", None)
        if folder is None:  # resolved once, not per row
            folder = self._results_folder = self.path.resolve().parent
        return row_key(image, folder)

    def __init__(self, path: Path, *, topk: int, resume: bool = False, overwrite: bool = False):
        _import_pyarrow()
        import pyarrow.parquet as pq

        self.path = path
        self.topk = topk
        self.schema = parquet_schema(topk)
        self.journal_path = path.with_name(path.name + ".partial.jsonl")
        if _exists_nonempty(path) and not (resume or overwrite):
            raise OutputError(f"{path} already exists: add --resume to continue it, "
                              "or --overwrite to start again")
        self.journal = JsonlWriter(self.journal_path, topk=topk, resume=resume, overwrite=overwrite,
                                   what=" (rows of an interrupted run)")
        # we hold the journal's lock, so a temporary Parquet file left here is from a run killed
        # while writing it: remove it
        for stale in path.parent.glob(f".{path.name}.*.tmp"):
            stale.unlink(missing_ok=True)
        self.keep_old = resume and path.exists()
        self.old_has_path = True
        self.old_images: set[str] = set()
        self.dropped: set[str] = set()  # --retry-failed: old rows that this run replaces
        self.models = set(self.journal.models)
        # --overwrite: the old file goes at the first write (a later resume must not merge the
        # rows this run replaces), and stays if this run writes nothing
        self.unlink_first = overwrite
        old_failed: set[str] = set()
        if self.keep_old:
            try:
                parquet = pq.ParquetFile(path)
                names = parquet.schema_arrow.names
                # an earlier version's file has no path column: it gets one when rewritten
                self.old_has_path = PATH_COLUMN in names
                if names not in (self.schema.names, parquet_schema(topk, with_path=False).names):
                    raise OutputError(
                        f"{path} has other columns than --topk {topk} gives; resume with the "
                        "--topk of the first run, or write a new file")
                table = parquet.read(columns=["image", "model", "error_type"]
                                     + ([PATH_COLUMN] if self.old_has_path else []))
            except OutputError:
                self.journal.close()
                raise
            except Exception as exc:  # pyarrow's errors for a file that is not Parquet
                self.journal.close()
                raise OutputError(f"cannot read {path} as Parquet ({exc})") from None
            paths = (table.column(PATH_COLUMN).to_pylist() if self.old_has_path
                     else [None] * table.num_rows)
            for image, error, real_path in zip(table.column("image").to_pylist(),
                                               table.column("error_type").to_pylist(), paths):
                key = real_path or self._key(image)
                self.old_images.add(key)
                if error:
                    old_failed.add(key)
            self.models |= {m for m in table.column("model").to_pylist() if m}
        self.done = self.old_images | self.journal.done
        # a journal row is newer than the Parquet row of the same image, and replaces it
        self.failed = (old_failed - self.journal.done) | self.journal.failed
        self.rows_before = len(self.done)

    @property
    def failed_before(self) -> int:
        return len(self.failed)

    def drop(self, keys: set[str]) -> int:
        """Leave these images' rows out (``--retry-failed``): from the journal now, from the
        Parquet file when it is written again at the end."""
        keys = keys & self.done
        if not keys:
            return 0
        self.journal.drop(keys)
        self.dropped |= keys & self.old_images
        self.done -= keys
        self.failed -= keys
        return len(keys)

    def write(self, rows: Iterable[dict]) -> None:
        rows = list(rows)
        if rows and self.unlink_first:
            self.path.unlink(missing_ok=True)
            self.unlink_first = False
        self.journal.write(rows)

    def close(self) -> None:
        """Write the Parquet file (old rows + journal), then remove the journal. If that fails
        (disk full), the journal stays: ``--resume`` merges it later."""
        if self.journal.file.handle.closed:
            return
        if self.journal.file.unused and not self.keep_old:
            self.journal.close()  # nothing written: the output stays as it was, or absent
            return
        try:
            self._finish()
        finally:
            self.journal.close()
        self.journal_path.unlink(missing_ok=True)

    def _finish(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if (self.keep_old and self.path.exists() and not self.dropped
                and self.journal_path.stat().st_size == 0):
            return  # nothing new
        journal_keys: set[str] = set()
        _scan_jsonl(self.journal_path, lambda row: journal_keys.add(
            row.get(PATH_COLUMN) or self._key(row["image"])))
        replaced = journal_keys | self.dropped
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            with pq.ParquetWriter(tmp, self.schema) as out:
                if self.keep_old and self.path.exists():
                    for batch in pq.ParquetFile(self.path).iter_batches(batch_size=PARQUET_CHUNK_ROWS):
                        table = pa.Table.from_batches([batch])
                        if not self.old_has_path:
                            keys = [self._key(i) for i in table.column("image").to_pylist()]
                            table = table.append_column(pa.field(PATH_COLUMN, pa.string()),
                                                       pa.array(keys, pa.string()))
                        if replaced:
                            keys = [real or self._key(image) for real, image in
                                    zip(table.column(PATH_COLUMN).to_pylist(),
                                        table.column("image").to_pylist())]
                            table = table.filter(pa.array([k not in replaced for k in keys]))
                        if table.num_rows:
                            out.write_table(table)
                seen: set[str] = set()
                chunk: list[dict] = []

                def add(row: dict) -> None:
                    key = row.get(PATH_COLUMN) or self._key(row["image"])
                    if key in seen:
                        return
                    seen.add(key)
                    chunk.append(flatten(row, self.topk))
                    if len(chunk) == PARQUET_CHUNK_ROWS:
                        out.write_table(pa.Table.from_pylist(chunk, schema=self.schema))
                        chunk.clear()

                _scan_jsonl(self.journal_path, add)
                if chunk:
                    out.write_table(pa.Table.from_pylist(chunk, schema=self.schema))
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:  # pyarrow raises OSError for a full disk / RLIMIT_FSIZE
            raise OutputWriteError(self.path, exc) from None
        finally:
            if tmp.exists():
                tmp.unlink()
