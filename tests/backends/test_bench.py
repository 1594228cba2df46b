"""`shiwu bench`: every requested configuration gets a row with sane figures, or says why not."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shiwu import bench
from shiwu.bench import BenchReport, Row, format_table, percentile, run_bench

SHIWU = Path(sys.executable).parent / "shiwu"


def test_percentile_interpolates():
    assert percentile([3, 1, 2], 50) == 2
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile(list(range(101)), 95) == 95
    assert percentile([7], 95) == 7


@pytest.mark.slow
def test_bench_measures_every_configuration_in_its_own_process(tmp_path):
    """The real thing, kept small: two runtimes at 160px, one thread, batch 1, short timings."""
    out = tmp_path / "bench.json"
    run = subprocess.run(
        [str(SHIWU), "bench", "--backends", "torch,onnxruntime,ipex", "--sizes", "160",
         "--threads", "1", "--batch", "1", "--seconds", "0.2", "--views", "18", "--json", out, "-q"],
        capture_output=True, text=True, encoding="utf-8", timeout=600)
    assert run.returncode == 0, run.stderr
    data = json.loads(out.read_text(encoding="utf-8"))
    rows = {r["backend"]: r for r in data["rows"]}
    assert [(r["backend"], r["precision"], r["size"], r["threads"], r["batch"]) for r in data["rows"]] == [
        ("torch", "fp32", 160, 1, 1), ("onnxruntime", "fp32", 160, 1, 1), ("ipex", "fp32", 160, 1, 1)]
    assert data["reference"] == {"backend": "torch", "precision": "fp32", "size": 224}
    assert data["images"]["count"] == 18 and data["images"]["photos"] == 9
    assert not data["interrupted"]

    for name in ("torch", "onnxruntime"):
        r = rows[name]
        assert r["status"] == "ok", r
        assert r["runs_as"] == name
        assert 0 < r["ms_p50"] <= r["ms_p95"] < 5000
        assert r["calls"] >= 5
        # throughput and latency describe the same calls
        assert 0.2 < r["images_per_s"] * r["ms_p50"] / 1000 < 5
        assert 30 < r["peak_rss_mb"] < 4000
        assert 0 < r["cold_start_s"] < 120 and 0 < r["cold_start_no_cache_s"] < 300
        assert 0 <= r["agreement"] <= 1 and r["agreement_images"] == 18
    # embeddings of the same views, at 160px against the 224px reference: close, not equal
    for name in ("torch", "onnxruntime"):
        assert 0.5 < rows[name]["embedding_cosine_min"] <= rows[name]["embedding_cosine"] < 0.9999
    assert rows["torch"]["embedding_cosine"] == pytest.approx(rows["onnxruntime"]["embedding_cosine"], abs=1e-3)
    # the same model at the same size: both runtimes give the same top-1s
    assert rows["torch"]["agreement"] == pytest.approx(rows["onnxruntime"]["agreement"], abs=0.06)
    # an ONNX Runtime process with its export cached does not import torch: less memory
    assert rows["onnxruntime"]["peak_rss_mb"] < rows["torch"]["peak_rss_mb"]
    # the empty cache has to export first
    assert rows["onnxruntime"]["cold_start_no_cache_s"] > rows["onnxruntime"]["cold_start_s"]

    assert rows["ipex"]["status"] == "unavailable" and rows["ipex"]["error"]
    assert rows["ipex"]["ms_p50"] is None

    table = [line for line in run.stdout.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| backend | precision | size | threads | batch | p50 ms/img")
    body = table[1:]
    assert len(body) == 3
    assert body[0].startswith("| torch | fp32 | 160 | 1 | 1 | ") and "%" in body[0]
    assert body[1].startswith("| onnxruntime | fp32 | 160 | 1 | 1 | ")
    assert body[2].startswith("| ipex | fp32 | 160 | 1 | 1 | unavailable: ")


class FakeRunner:
    """Stands in for the worker processes: canned answers, optionally Ctrl-C at some call."""

    def __init__(self, workdir, timeout, interrupt_at=None):
        self.jobs = []
        self.interrupt_at = interrupt_at

    def run(self, job, *, cache=None):
        self.jobs.append({**job, "cache": cache})
        if self.interrupt_at is not None and len(self.jobs) == self.interrupt_at:
            raise bench._Interrupted()
        import numpy as np
        n = len(np.load(job["inputs"], mmap_mode="r"))
        if job["mode"] == "reference":
            return {"status": "ok", "top1": [1] * n}
        if job["backend"] == "openvino" and job["precision"] == "int8":
            return {"status": "unavailable", "error": "int8 refused by the quality gate"}
        if job["mode"] == "cold":
            return {"status": "ok", "cold_start_s": 9.0 if cache else 1.0, "runs_as": job["backend"]}
        top1 = [1] * n if job["size"] == 224 else [1] * (n - 1) + [2]
        calls = [0.010 * b for b in job["batches"]]
        return {"status": "ok", "runs_as": job["backend"], "peak_rss_mb": 100.0, "cold_start_s": 0.5,
                "timings": {str(b): [c] * 10 for b, c in zip(job["batches"], calls)}, "top1": top1}


def fake_bench(monkeypatch, interrupt_at=None, **options):
    runners = []

    def make(workdir, timeout):
        runners.append(FakeRunner(workdir, timeout, interrupt_at))
        return runners[0]

    monkeypatch.setattr(bench, "_Runner", make)
    report = run_bench(None, agreement_images=9, progress=False, **options)
    return report, runners[0]


def test_rows_cover_the_whole_grid_and_unavailable_ones_say_why(monkeypatch):
    report, runner = fake_bench(monkeypatch, backends=["onnxruntime", "openvino"],
                                precisions=["fp32", "int8"], sizes=[224, 168], threads=[1, 2],
                                batches=[1, 8])
    assert len(report.rows) == 2 * 2 * 2 * 2 * 2
    assert {(r.backend, r.precision, r.size, r.threads, r.batch) for r in report.rows} == {
        (b, p, s, t, n) for b in ("onnxruntime", "openvino") for p in ("fp32", "int8")
        for s in (224, 168) for t in (1, 2) for n in (1, 8)}
    for row in report.rows:
        if (row.backend, row.precision) == ("openvino", "int8"):
            assert row.status == "unavailable" and "quality gate" in row.error
        else:
            assert row.ok
            assert row.ms_p50 == pytest.approx(10.0) and row.images_per_s == pytest.approx(100.0)
            assert row.agreement == (1.0 if row.size == 224 else pytest.approx(8 / 9))
            assert row.cold_start_no_cache_s == 9.0 and row.cold_start_s == 0.5
    # one process per configuration, plus the reference and an empty-cache start per group;
    # an unavailable group is asked once, not once per thread count and batch size
    modes = [j["mode"] for j in runner.jobs]
    assert modes.count("reference") == 1
    assert modes.count("measure") == 3 * 2 * 2 * 2 + 2
    assert all(j["cache"] for j in runner.jobs if j["mode"] == "cold")
    assert all(len(j["batches"]) == 1 for j in runner.jobs if j["mode"] == "measure")

    table = format_table(report).splitlines()
    rows = [line for line in table if line.startswith("| ") and "backend |" not in line]
    assert len(rows) == 32
    assert sum("as above" in line for line in rows) == 7  # 8 int8 rows, one reason



@pytest.mark.parametrize("remeasure", [True, False])
def test_a_process_that_filled_the_cache_is_measured_again_or_marked(monkeypatch, tmp_path, remeasure):
    """Its memory and start include the one-time export: bench measures it again; tune (which
    does not, to save time) marks those two figures, where its table showed 410 MB and 4.2 s
    beside 150 MB and 0.45 s for the sizes already cached."""
    monkeypatch.setenv("SHIWU_CACHE", str(tmp_path))
    exported = set()

    class Exporting(FakeRunner):
        def run(self, job, *, cache=None):
            if job["mode"] == "measure" and job["size"] not in exported:  # the first process of a size
                exported.add(job["size"])
                (tmp_path / f"model-{job['size']}.onnx").write_bytes(b"x")
            return super().run(job, cache=cache)

    monkeypatch.setattr(bench, "_Runner", lambda workdir, timeout: Exporting(workdir, timeout))
    report = run_bench(None, agreement_images=9, progress=False, backends=["onnxruntime"], precisions=["fp32"],
                       sizes=[224, 168], threads=[1], batches=[1], cold=False, remeasure=remeasure)
    marked = [row.filled_cache for row in report.rows]
    table = format_table(report)
    if remeasure:
        assert marked == [False, False] and "*" not in table
    else:
        assert marked == [True, True]
        assert "| 100* | 0.50* |" in table and "exported or compiled the model first" in table

def test_ctrl_c_keeps_what_was_measured(monkeypatch):
    # jobs: the reference, then torch b1, torch b8, onnxruntime b1 (done), onnxruntime b8 (Ctrl-C)
    report, _ = fake_bench(monkeypatch, interrupt_at=5, backends=["torch", "onnxruntime"],
                           threads=[2], batches=[1, 8], cold=False)
    assert report.interrupted
    assert [r.status for r in report.rows] == ["ok", "ok", "ok", "not measured"]
    text = format_table(report)
    assert "interrupted: 3 of 4 configurations measured" in text
    assert "| onnxruntime | fp32 | 224 | 2 | 8 | not measured |" in text


@pytest.mark.slow
def test_real_ctrl_c_prints_the_partial_table(tmp_path):
    """SIGINT to a running `shiwu bench`: the worker is stopped, the table of the rows measured
    so far is printed, and the exit code is 130."""
    proc = subprocess.Popen(
        [str(SHIWU), "bench", "--backends", "onnxruntime,torch,torchscript", "--sizes", "160",
         "--threads", "1", "--batch", "1", "--seconds", "2", "--views", "9", "--no-cold"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8")
    # the progress bar says when the reference and the first configuration are done
    seen = ""
    deadline = time.monotonic() + 240
    while not ("2/4" in seen and "torch fp32 160px" in seen) and time.monotonic() < deadline \
            and proc.poll() is None:
        seen += os.read(proc.stderr.fileno(), 4096).decode("utf-8", "replace")
    # two configurations of at least 2 s each remain: the signal lands while the bench runs
    assert proc.poll() is None, seen
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, seen
    lines = [line for line in out.splitlines() if line.startswith("| ")]
    assert lines[1].startswith("| onnxruntime | fp32 | 160 | 1 | 1 | ") and "%" in lines[1]
    assert "not measured" in lines[-1]
    assert "interrupted:" in out


def test_plot_draws_a_png(tmp_path):
    report = BenchReport(model="m", native_size=224, machine={"cpu": "x"},
                         reference={"backend": "torch", "precision": "fp32", "size": 224},
                         images={"count": 9, "photos": 9, "source": "s"}, seconds=1)
    report.rows = [Row("torch", "fp32", 224, 1, 1, status="ok", ms_p50=20, agreement=1.0),
                   Row("openvino", "int8", 168, 1, 8, status="ok", ms_p50=2, agreement=0.9),
                   Row("ipex", "fp32", 224, 1, 1, status="unavailable", error="no")]
    path = bench.plot(report, tmp_path / "plot.png")
    assert path.read_bytes().startswith(b"\x89PNG")


def test_plot_without_matplotlib_says_how_to_get_it(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(bench.PlotUnavailable, match=r"shiwu\[plot\]"):
        bench.check_plot_available()


@pytest.mark.parametrize("backend", ["torch", "torchscript"])
def test_a_runtime_without_int8_is_a_row_that_says_so(tmp_path, backend):
    """The worker turns BackendUnavailable into a reason (not a crash, not a TypeError)."""
    job = tmp_path / "job.json"
    result = tmp_path / "result.json"
    job.write_text(json.dumps({"mode": "measure", "model": None, "backend": backend, "precision": "int8",
                               "size": 160, "threads": 1, "batches": [1], "seconds": 0.1,
                               "photo": "unused", "inputs": "unused", "result": str(result)}))
    assert bench._worker(str(job)) == 0
    answer = json.loads(result.read_text())
    assert answer["status"] == "unavailable" and "int8" in answer["error"]
