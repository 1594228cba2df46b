"""batch/output's shared parts: a results file's temporary files left by a killed rewrite
(--retry-failed) are removed by the next run that holds the file's lock, in every format."""

import json

import pytest

from shiwu.batch.output import open_writer
from shiwu.fsutil import TEMP_PREFIX


def _row(name):
    return {"image": name, "predictions": [{"label": "猫", "label_en": "cat", "index": 1, "score": 0.5}],
            "model": "m", "backend": "torch", "precision": "fp32", "error": None}


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_temporary_files_of_a_killed_rewrite_are_removed_on_resume(tmp_path, suffix):
    out = tmp_path / f"out{suffix}"
    writer = open_writer(out, topk=1, model="m")
    writer.write([_row(str(tmp_path / "a.jpg"))])
    writer.close()
    strays = [tmp_path / f"{TEMP_PREFIX}x1y2-{out.name}", tmp_path / f".{out.name}.4242.rewrite.tmp"]
    for stray in strays:
        stray.write_bytes(b"half")
    other = tmp_path / f"{TEMP_PREFIX}x1y2-another.jsonl"  # another output's: not ours to remove
    other.write_bytes(b"half")
    writer = open_writer(out, topk=1, resume=True, model="m")
    writer.close()
    assert not any(s.exists() for s in strays) and other.exists()


def test_a_row_whose_error_names_a_file_that_is_not_utf8_is_written_readable(tmp_path):
    out = tmp_path / "out.jsonl"
    bad = "/data/" + b"\xd5\xd5.jpg".decode("utf-8", "surrogateescape")
    row = {**_row("x.jpg"), "predictions": [], "error": {"type": "ImageError", "message": f"cannot open {bad}"}}
    writer = open_writer(out, topk=1)
    writer.write([row])
    writer.close()
    (line,) = out.read_text(encoding="utf-8").splitlines()
    assert json.loads(line)["error"]["message"] == "cannot open /data/\\xd5\\xd5.jpg"
