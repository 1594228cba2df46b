"""shiwu.batch in-process: inputs, result files (resume, torn tails, locks), the local pipeline."""

import io
import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from shiwu.batch import InputError, OutputError, run_batch
from shiwu.batch.local import decode_batch, rows_for
from shiwu.batch.sources import collect_images, image_key
from shiwu.batch.output import columns, flatten, open_writer
from shiwu.preprocess import Preprocessing

from support.bad_images import BAD_FILES, make_bad_files
from support.batch import read_back, small_photos
from support.photos import CAT_CLASSES, DATA, PHOTOS

MODEL = "efficientnet-lite0"


def row(image, *, label="虎斑猫", index=281, error=None, model=MODEL):
    predictions = [] if error else [{"label": label, "label_en": "tabby cat", "index": index,
                                     "score": 0.5}]
    return {"image": image, "predictions": predictions, "model": model, "backend": "torch",
            "precision": "fp32", "error": error}


def keys(*names):
    """Writers know images by identity (resolved real path), not by spelling."""
    return {image_key(n) for n in names}


# --- inputs -----------------------------------------------------------------------------------

def test_folders_lists_stdin_and_files_become_one_ordered_list(tmp_path):
    top = tmp_path / "photos"
    (top / "sub" / "deeper").mkdir(parents=True)
    (top / ".hidden").mkdir()
    for name in ("b.JPG", "a.png", "notes.txt", ".DS_Store", "._a.png"):
        (top / name).write_bytes(b"x")
    (top / "sub" / "c.webp").write_bytes(b"x")
    (top / "sub" / "deeper" / "d.jpeg").write_bytes(b"x")
    (top / ".hidden" / "e.jpg").write_bytes(b"x")
    assert collect_images([str(top)]) == [str(top / "a.png"), str(top / "b.JPG")]
    assert collect_images([str(top)], recursive=True) == [
        str(top / "a.png"), str(top / "b.JPG"), str(top / "sub" / "c.webp"),
        str(top / "sub" / "deeper" / "d.jpeg")]

    listing = tmp_path / "lists" / "todo.txt"
    listing.parent.mkdir()
    listing.write_text("\ufeff# my photos\n../photos/a.png\n\n../photos/sub/c.webp\r\n"
                       f"{top / 'b.JPG'}\nmissing.jpg\n", encoding="utf-8")
    stdin = io.StringIO(f"{top / 'a.png'}\n{tmp_path / 'x.gif'}\n")
    got = collect_images([str(listing), "-", str(top / "a.png")], stdin=stdin)
    assert got == [str(top / "a.png"), str(top / "sub" / "c.webp"), str(top / "b.JPG"),
                   str(tmp_path / "lists" / "missing.jpg"), str(tmp_path / "x.gif")]
    # each image once, missing ones (inside lists) kept


def test_an_empty_input_is_a_usage_error(tmp_path):
    with pytest.raises(InputError, match=r"no images found in \S+$"):  # no sub-folder: no hint
        run_batch([str(tmp_path)], str(tmp_path / "out.jsonl"))
    (tmp_path / "2024").mkdir()
    with pytest.raises(InputError, match="no images found.*add --recursive"):
        run_batch([str(tmp_path)], str(tmp_path / "out.jsonl"))
    assert not (tmp_path / "out.jsonl").exists()


# --- result files -----------------------------------------------------------------------------

def test_flat_columns_for_csv_and_parquet():
    assert columns(2) == ["image", "label_1", "label_en_1", "index_1", "score_1", "label_2",
                          "label_en_2", "index_2", "score_2", "model", "backend", "precision",
                          "error_type", "error_message", "path"]
    flat = flatten(row("a.jpg"), 2)
    assert flat["label_1"] == "虎斑猫" and flat["index_1"] == 281 and flat["label_2"] is None
    assert flat["error_type"] is None
    bad = flatten(row("b.jpg", error={"type": "ImageError", "message": "file not found"}), 2)
    assert bad["label_1"] is None and bad["error_message"] == "file not found"


def test_jsonl_resume_cuts_the_torn_last_row_of_a_killed_run(tmp_path, capsys, caplog):
    caplog.set_level("INFO", logger="shiwu")
    out = tmp_path / "out.jsonl"
    good = "".join(json.dumps(row(f"{i}.jpg"), ensure_ascii=False) + "\n" for i in range(3))
    out.write_text(good + json.dumps(row("3.jpg"), ensure_ascii=False)[:40], encoding="utf-8")
    writer = open_writer(out, topk=1, resume=True, model=MODEL)
    assert writer.done == keys("0.jpg", "1.jpg", "2.jpg")
    writer.write([row("3.jpg"), row("4.jpg", error={"type": "ImageError", "message": "bad"})])
    writer.close()
    lines = out.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["image"] for line in lines] == [f"{i}.jpg" for i in range(5)]
    # logged (the CLI shows it as "shiwu: dropped ..."; caplog holds it when no CLI configured logging)
    assert "incomplete last row" in capsys.readouterr().err + caplog.text
    again = open_writer(out, topk=1, resume=True)
    assert len(again.done) == 5 and again.failed_before == 1
    again.close()


def test_existing_damaged_locked_or_mismatched_outputs_are_refused(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text(json.dumps(row("a.jpg")) + "\n")
    with pytest.raises(OutputError, match="--resume"):
        open_writer(out, topk=1)
    with pytest.raises(OutputError, match="model efficientnet-lite0"):
        open_writer(out, topk=1, resume=True, model="other-model")
    holder = open_writer(out, topk=1, resume=True)
    with pytest.raises(OutputError, match="another shiwu batch"):
        open_writer(out, topk=1, resume=True)
    holder.close()
    parquet = tmp_path / "out.parquet"  # its rows go to a journal first: the lock names the output
    holder = open_writer(parquet, topk=1)
    with pytest.raises(OutputError, match=f"another shiwu batch is writing {parquet};"):
        open_writer(parquet, topk=1, resume=True)
    holder.close()
    out.write_text("not json\n" + json.dumps(row("a.jpg")) + "\n")
    with pytest.raises(OutputError, match="line 1"):
        open_writer(out, topk=1, resume=True)
    with pytest.raises(OutputError, match=r"\.jsonl, \.csv or \.parquet"):
        open_writer(tmp_path / "out.xlsx", topk=1)
    before = out.read_bytes()
    overwritten = open_writer(out, topk=1, overwrite=True)
    assert overwritten.done == set()
    overwritten.close()
    assert out.read_bytes() == before  # nothing written: the old results stay
    overwritten = open_writer(out, topk=1, overwrite=True)
    overwritten.write([row("b.jpg")])
    overwritten.close()
    assert [json.loads(line)["image"] for line in out.read_text().splitlines()] == ["b.jpg"]


def test_csv_is_excel_friendly_and_resume_cuts_a_torn_quoted_row(tmp_path):
    out = tmp_path / "out.csv"
    writer = open_writer(out, topk=2)
    writer.write([row("a.jpg"), row("逗号,和\"引号\".jpg", error={"type": "ImageError",
                                                                "message": "two\nlines"})])
    writer.close()
    data = out.read_bytes()
    assert data.startswith(b"\xef\xbb\xbfimage,label_1,")  # UTF-8 BOM: Excel shows Chinese
    out.write_bytes(data + b'"c.jpg,\xe8\x99\x8e')  # a kill in the middle of a quoted field
    writer = open_writer(out, topk=2, resume=True)
    assert writer.done == keys("a.jpg", "逗号,和\"引号\".jpg") and writer.failed_before == 1
    writer.write([row("c.jpg")])
    writer.close()
    import csv
    with open(out, encoding="utf-8-sig", newline="") as handle:
        records = list(csv.DictReader(handle))
    assert [r["image"] for r in records] == ["a.jpg", "逗号,和\"引号\".jpg", "c.jpg"]
    assert records[0]["label_1"] == "虎斑猫" and records[1]["error_message"] == "two\nlines"
    with pytest.raises(OutputError, match="--topk"):
        open_writer(out, topk=3, resume=True)


@pytest.mark.slow
def test_parquet_journal_merges_into_one_file_without_duplicates(tmp_path):
    out = tmp_path / "out.parquet"
    journal = tmp_path / "out.parquet.partial.jsonl"
    writer = open_writer(out, topk=1)
    writer.write([row("a.jpg"), row("b.jpg")])
    assert journal.exists() and not out.exists()  # rows are safe in the journal per batch
    writer.close()
    assert not journal.exists()
    assert pq.read_table(out).column("image").to_pylist() == ["a.jpg", "b.jpg"]

    # A run killed after the rename but before deleting its journal, then one killed mid-batch,
    # and one killed while writing the Parquet file.
    (tmp_path / ".out.parquet.12345.tmp").write_bytes(b"PAR1 half a file")
    journal.write_text(json.dumps(row("b.jpg")) + "\n" + json.dumps(row("c.jpg")) + "\n"
                       + json.dumps(row("d.jpg"))[:30])
    with pytest.raises(OutputError, match="--resume"):
        open_writer(out, topk=1)
    writer = open_writer(out, topk=1, resume=True)
    assert writer.done == keys("a.jpg", "b.jpg", "c.jpg")
    writer.write([row("d.jpg", error={"type": "ImageError", "message": "file not found"})])
    writer.close()
    table = pq.read_table(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.parquet"]
    assert table.column("image").to_pylist() == ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]
    assert table.column("label_1").to_pylist()[0] == "虎斑猫"
    assert table.column("error_message").to_pylist()[3] == "file not found"
    assert str(table.schema.field("index_1").type) == "int32"
    with pytest.raises(OutputError, match="--topk"):
        open_writer(out, topk=2, resume=True)


# --- the local pipeline -----------------------------------------------------------------------

def test_decode_batch_matches_the_recognizer_and_reports_bad_files(tmp_path, recognizer):
    bad = make_bad_files(tmp_path)
    paths = [str(PHOTOS[0]), *map(str, bad), str(PHOTOS[1])]
    decoded = decode_batch(paths, recognizer.preprocessing)
    assert decoded.ok == [0, len(paths) - 1]
    for array, position in zip(decoded.pixels, decoded.ok):
        expected = recognizer.preprocessing(recognizer.load(paths[position]))
        assert np.array_equal(array, expected)
    for position, path in enumerate(bad, 1):
        kind, message = decoded.errors[position]
        assert kind == "ImageError" and BAD_FILES[path.name][0] in message
    rows = rows_for(paths, decoded, recognizer, topk=3)
    assert [r["image"] for r in rows] == paths
    assert len(rows[0]["predictions"]) == 3 and rows[1]["predictions"] == []


@pytest.mark.slow
def test_run_batch_gives_the_same_rows_as_recognize(tmp_path):
    from shiwu import Recognizer

    recognizer = Recognizer(backend="torch", threads=1)
    (tmp_path / "bad").mkdir()
    bad = make_bad_files(tmp_path / "bad")
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(map(str, bad)) + "\n")
    out = tmp_path / "out.jsonl"
    summary = run_batch([str(DATA), str(listing)], str(out), backend="torch", threads=1,
                        batch_size=4, workers=1, topk=3, progress=False, log=lambda m: None)
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    expected = recognizer.recognize([str(p) for p in PHOTOS] + [str(p) for p in bad], topk=3)
    assert [r["image"] for r in rows] == [e.image for e in expected]
    for got, want in zip(rows, expected):
        want = want.to_dict()
        assert (got["error"] is None) == (want["error"] is None)
        assert [p["index"] for p in got["predictions"]] == [p["index"] for p in want["predictions"]]
        for p, q in zip(got["predictions"], want["predictions"]):
            assert p["score"] == pytest.approx(q["score"], abs=1e-4)
        if want["error"]:
            assert got["error"] == want["error"]
    chelsea = next(r for r in rows if r["image"].endswith("chelsea.jpg"))
    assert chelsea["predictions"][0]["index"] in CAT_CLASSES
    assert (summary.total, summary.done, summary.failed, summary.skipped) == (
        len(rows), len(rows), len(bad), 0)
    assert not summary.interrupted and summary.backend == "torch"

    # resume: nothing left to do; new images are the only work
    extra = small_photos(tmp_path / "new", 3)
    again = run_batch([str(DATA), str(listing), str(tmp_path / "new")], str(out), resume=True,
                      topk=3, backend="torch", threads=1, workers=0, progress=False,
                      log=lambda m: None)
    assert (again.skipped, again.done, again.failed_before) == (len(rows), 3, len(bad))
    images = [json.loads(line)["image"] for line in out.read_text(encoding="utf-8").splitlines()]
    assert images == [r["image"] for r in rows] + [str(p) for p in extra]


def test_workers_are_separate_processes_without_torch(tmp_path):
    """Decoders must not carry the model or the inference threads (spawned, not forked)."""
    from concurrent.futures import ProcessPoolExecutor
    import multiprocessing

    from shiwu.batch import decoders

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                             initializer=decoders.init_worker,
                             initargs=(Preprocessing(), 10**8)) as pool:
        pid, has_torch = pool.submit(_probe).result()
    assert pid != os.getpid() and not has_torch


def _probe():
    import sys

    return os.getpid(), "torch" in sys.modules


class _CrashOn13(Preprocessing):
    """Preprocessing whose process dies (like a C-level fault in a decoder) on 13x13 images."""

    def __call__(self, image):
        if image.size == (13, 13):
            os._exit(11)
        return super().__call__(image)


@pytest.mark.slow
def test_a_decoder_crash_costs_only_the_file_that_caused_it(tmp_path):
    from dataclasses import dataclass, fields

    from shiwu.batch.local import ModelOptions, run_local

    @dataclass(frozen=True)
    class Options(ModelOptions):
        def recognizer(self, batch_size=32):
            recognizer = super().recognizer(batch_size)
            p = recognizer.preprocessing
            recognizer.preprocessing = _CrashOn13(**{f.name: getattr(p, f.name) for f in fields(p)})
            return recognizer

    paths = [str(p) for p in small_photos(tmp_path, 9)]
    Image.new("RGB", (13, 13), "red").save(tmp_path / "img_004.jpg")
    rows = [r for batch in run_local(paths, Options(backend="torch", threads=1), batch_size=3,
                                     workers=1) for r in batch]
    assert [r["image"] for r in rows] == paths
    assert [bool(r["error"]) for r in rows] == [i == 4 for i in range(9)]
    assert "crashed" in rows[4]["error"]["message"]
    assert all(r["predictions"] for i, r in enumerate(rows) if i != 4)


def test_a_run_that_writes_nothing_leaves_no_file_behind(tmp_path):
    for suffix in ("jsonl", "csv", "parquet"):
        out = tmp_path / f"out.{suffix}"
        open_writer(out, topk=1).close()  # e.g. the backend could not be loaded
        assert not out.exists() and not list(tmp_path.iterdir())
    for suffix in ("jsonl", "csv", "parquet"):  # existing results are never removed
        out = tmp_path / f"out.{suffix}"
        writer = open_writer(out, topk=1)
        writer.write([row("a.jpg")])
        writer.close()
        before = out.read_bytes()
        for how in ({"resume": True}, {"overwrite": True}):
            open_writer(out, topk=1, **how).close()
            assert out.read_bytes() == before
        writer = open_writer(out, topk=1, overwrite=True)
        writer.write([row("b.jpg")])
        writer.close()
        assert [r["image"] for r in read_back(out)] == ["b.jpg"]


class _CrashAlways(Preprocessing):
    def __call__(self, image):
        os._exit(11)


def test_decoders_that_cannot_work_at_all_stop_the_run_with_a_clear_error(tmp_path):
    from dataclasses import dataclass, fields

    from shiwu.batch import DecoderError
    from shiwu.batch.local import ModelOptions, run_local

    @dataclass(frozen=True)
    class Options(ModelOptions):
        def recognizer(self, batch_size=32):
            recognizer = super().recognizer(batch_size)
            p = recognizer.preprocessing
            recognizer.preprocessing = _CrashAlways(**{f.name: getattr(p, f.name) for f in fields(p)})
            return recognizer

    paths = [str(p) for p in small_photos(tmp_path, 4)]
    with pytest.raises(DecoderError, match="__main__"):
        list(run_local(paths, Options(backend="torch", threads=1), batch_size=2, workers=1))


def test_files_of_earlier_versions_without_a_path_column_are_resumed(tmp_path, monkeypatch):
    """CSV and Parquet files written before the ``path`` column: resumed (matched through
    their relative spellings), CSV continued in its own columns, Parquet given the column."""
    import csv as csv_module

    import pyarrow as pa

    from shiwu.batch.output import parquet_schema

    monkeypatch.chdir(tmp_path)
    small_photos(tmp_path / "in", 2)
    old_columns = columns(1, with_path=False)
    legacy = {name: None for name in old_columns}
    legacy.update(image="in/img_000.jpg", label_1="猫", index_1=281, score_1=0.5, model=MODEL)
    with open("old.csv", "w", encoding="utf-8-sig", newline="") as handle:
        writer = csv_module.writer(handle, lineterminator="\n")
        writer.writerow(old_columns)
        writer.writerow(["" if legacy[c] is None else legacy[c] for c in old_columns])
    pq.write_table(pa.Table.from_pylist([legacy], schema=parquet_schema(1, with_path=False)),
                   "old.parquet")
    for name in ("old.csv", "old.parquet"):
        summary = run_batch([str(tmp_path / "in")], name, resume=True, topk=1, backend="torch",
                            threads=1, workers=0, progress=False, log=lambda m: None)
        assert (summary.skipped, summary.done) == (1, 1), name
        rows = read_back(tmp_path / name)
        assert [r["image"] for r in rows] == ["in/img_000.jpg", str(tmp_path / "in" / "img_001.jpg")]
    assert "path" not in read_back(tmp_path / "old.csv")[0]
    assert [r["path"] for r in read_back(tmp_path / "old.parquet")] == [
        str(tmp_path / "in" / "img_000.jpg"), str(tmp_path / "in" / "img_001.jpg")]
