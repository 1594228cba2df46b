"""Parquet results, which cannot be appended to: a Parquet file cut short by a kill has no
footer and cannot be read at all.

So the rows are journalled, per batch, as JSON Lines in ``OUT.partial.jsonl`` beside the output,
and the Parquet file is written when the run ends (also on Ctrl-C): old rows plus journal,
through ``fsutil.atomic_output``, then the journal is deleted. A resumed run picks up both the
Parquet file and the journal, and drops journal rows the Parquet file already has (a kill
between the rename and the delete).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from ...fsutil import atomic_output
from .appendfile import refuse_existing, remove_stale_temporaries
from .errors import OutputError, OutputWriteError
from .jsonl import JsonlWriter, scan_jsonl
from .resume import ResumeState
from .schema import PATH_COLUMN, flatten, parquet_schema

PARQUET_CHUNK_ROWS = 65_536


def import_pyarrow():
    try:
        import pyarrow  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise OutputError("writing Parquet needs pyarrow: pip install 'shiwu[parquet]'") from None


class ParquetWriter(ResumeState):
    kind = "parquet"

    def __init__(self, path: Path, *, topk: int, resume: bool = False, overwrite: bool = False):
        import_pyarrow()
        import pyarrow.parquet as pq

        super().__init__(path)
        self.topk = topk
        self.schema = parquet_schema(topk)
        self.journal_path = path.with_name(path.name + ".partial.jsonl")
        refuse_existing(path, resume=resume, overwrite=overwrite)
        self.journal = JsonlWriter(self.journal_path, topk=topk, resume=resume, overwrite=overwrite,
                                   what=" (rows of an interrupted run)", output=path)
        remove_stale_temporaries(path)
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
                key = self.key(image, real_path)
                self.old_images.add(key)
                if error:
                    old_failed.add(key)
            self.models |= {m for m in table.column("model").to_pylist() if m}
        self.done = self.old_images | self.journal.done
        # a journal row is newer than the Parquet row of the same image, and replaces it
        self.failed = (old_failed - self.journal.done) | self.journal.failed
        self.rows_before = len(self.done)

    def drop(self, keys: set[str]) -> int:
        """Leave these images' rows out (``--retry-failed``): from the journal now, from the
        Parquet file when it is written again at the end."""
        keys = keys & self.done
        if not keys:
            return 0
        self.journal.drop(keys)
        self.dropped |= keys & self.old_images
        return len(self.forget(keys))

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
        import pyarrow.parquet as pq

        if (self.keep_old and self.path.exists() and not self.dropped
                and self.journal_path.stat().st_size == 0):
            return  # nothing new
        journal_keys: set[str] = set()
        scan_jsonl(self.journal_path, lambda row: journal_keys.add(self.key_of(row)))
        replaced = journal_keys | self.dropped
        try:
            with atomic_output(self.path) as temporary:
                with pq.ParquetWriter(temporary, self.schema) as out:
                    if self.keep_old and self.path.exists():
                        self._copy_old_rows(out, replaced)
                    self._copy_journal(out)
        except OSError as exc:  # pyarrow raises OSError for a full disk / RLIMIT_FSIZE
            raise OutputWriteError(self.path, exc) from None

    def _copy_old_rows(self, out, replaced: set[str]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(self.path).iter_batches(batch_size=PARQUET_CHUNK_ROWS):
            table = pa.Table.from_batches([batch])
            if not self.old_has_path:
                keys = [self.key(i) for i in table.column("image").to_pylist()]
                table = table.append_column(pa.field(PATH_COLUMN, pa.string()),
                                            pa.array(keys, pa.string()))
            if replaced:
                keys = [self.key(image, real) for real, image in
                        zip(table.column(PATH_COLUMN).to_pylist(), table.column("image").to_pylist())]
                table = table.filter(pa.array([k not in replaced for k in keys]))
            if table.num_rows:
                out.write_table(table)

    def _copy_journal(self, out) -> None:
        import pyarrow as pa

        seen: set[str] = set()
        chunk: list[dict] = []

        def add(row: dict) -> None:
            key = self.key_of(row)
            if key in seen:
                return
            seen.add(key)
            chunk.append(flatten(row, self.topk))
            if len(chunk) == PARQUET_CHUNK_ROWS:
                out.write_table(pa.Table.from_pylist(chunk, schema=self.schema))
                chunk.clear()

        scan_jsonl(self.journal_path, add)
        if chunk:
            out.write_table(pa.Table.from_pylist(chunk, schema=self.schema))
