"""``shiwu bench``: the article's tables, measured on this machine, for any model.

For every combination of backend x precision x input size x threads x batch size, one fresh
process loads the model, recognises one photo (cold start: time from process start to that
first answer), runs the model on real preprocessed photos for a few seconds (latency per image,
p50 / p95, and throughput), reports its own peak RSS, and finally classifies a set of photo
views whose top-1 is compared with the fp32 reference (torch eager at the model's own size).
Measuring each combination in its own process keeps memory figures honest: nothing another
configuration loaded is still resident.

Cold start is measured twice per backend, precision and size: with the export cache as it is
(exports, int8 models, OpenVINO's compiled blobs already there) and with a fresh, empty cache
(the first run on a new machine pays for export, quantization and compilation).

A configuration that cannot run here (a runtime missing, int8 refused by its quality gate, no
bf16 on this CPU) becomes a row that says why. Ctrl-C stops the run and keeps what was measured.

The worker side of this module (``python -m shiwu.bench --worker JOB``) imports only what the
configuration itself needs, so an onnxruntime row does not pay for importing torch.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from itertools import product
from pathlib import Path
from typing import Callable, Iterable

from ..backends.runtimes import bench_defaults
from .measure import VIEW_SEED, agreement_photos, call_times, peak_rss_mb, percentile, prepare_inputs
from .report import BenchReport, Config, PlotUnavailable, Row, check_plot_available, format_table, plot
from .worker import _worker

__all__ = ["run_bench", "BenchReport", "Row", "Config", "BenchError", "PlotUnavailable",
           "format_table", "plot", "check_plot_available", "call_times", "percentile",
           "peak_rss_mb", "agreement_photos", "prepare_inputs", "machine_info", "VIEW_SEED", "_worker"]

DEFAULT_BACKENDS = tuple(reversed(bench_defaults()))   # the torch reference first
DEFAULT_BATCHES = (1, 8)
DEFAULT_SECONDS = 2.0
DEFAULT_AGREEMENT_IMAGES = 144   # 16 views of each of the 9 bundled photos
JOB_TIMEOUT = 900.0              # seconds; int8 calibration of a large model takes minutes


class BenchError(RuntimeError):
    """Nothing can be measured (e.g. the fp32 reference itself cannot run)."""


# --- running the workers ------------------------------------------------------------------------

def _cache_state(folder: Path) -> dict:
    state = {}
    for root, _dirs, files in os.walk(folder):
        for name in files:
            path = Path(root) / name
            try:
                stat = path.stat()
            except OSError:
                continue
            state[str(path)] = (stat.st_size, stat.st_mtime_ns)
    return state


class _Interrupted(Exception):
    pass


class _Runner:
    """Starts one worker process per job and waits for its answer."""

    def __init__(self, workdir: Path, timeout: float):
        self.workdir = workdir
        self.timeout = timeout
        self.count = 0

    def run(self, job: dict, *, cache: str | None = None) -> dict:
        self.count += 1
        job_path = self.workdir / f"job-{self.count}.json"
        out_path = self.workdir / f"result-{self.count}.json"
        log_path = self.workdir / f"log-{self.count}.txt"
        job = {**job, "result": str(out_path)}
        job_path.write_text(json.dumps(job), encoding="utf-8")
        env = dict(os.environ)
        if cache is not None:
            env["SHIWU_CACHE"] = cache
        env.setdefault("PYTHONIOENCODING", "utf-8")
        with open(log_path, "wb") as log:
            started = time.monotonic()
            proc = subprocess.Popen([sys.executable, "-m", "shiwu.bench", "--worker", str(job_path)],
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)
            try:
                code = proc.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                return {"status": "failed", "error": f"no answer within {self.timeout:g} s"}
            except KeyboardInterrupt:
                proc.kill()
                proc.wait()
                raise _Interrupted() from None
        try:
            result = json.loads(out_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            tail = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-3:]
            return {"status": "failed",
                    "error": f"worker exited with code {code}" + (f": {' / '.join(tail)}" if tail else "")}
        if "first_answer_at" in result:
            result["cold_start_s"] = result["first_answer_at"] - started
        return result


def machine_info() -> dict:
    import importlib.metadata

    from ..version import __version__
    from ..cpu import cpu_features, cpu_model, default_threads, physical_cores, usable_cpus

    versions = {}
    for dist in ("torch", "onnxruntime", "openvino", "nncf"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = None
    return {"cpu": cpu_model(), "physical_cores": physical_cores(), "cpus_usable": len(usable_cpus()),
            "default_threads": default_threads(), "cpu_features": cpu_features(),
            "load_average_1min_at_start": load, "python": sys.version.split()[0],
            "shiwu": __version__, "versions": versions}


def run_bench(model=None, *, backends: Iterable[str] = DEFAULT_BACKENDS,
              precisions: Iterable[str] = ("fp32",), sizes: Iterable[int] | None = None,
              threads: Iterable[int] | None = None, batches: Iterable[int] = DEFAULT_BATCHES,
              images: str | Path | None = None, agreement_images: int = DEFAULT_AGREEMENT_IMAGES,
              seconds: float = DEFAULT_SECONDS, cold: bool = True, progress: bool = True,
              timeout: float = JOB_TIMEOUT, batches_per_process: bool = False,
              remeasure: bool = True, on_row: Callable[[Row], None] | None = None) -> BenchReport:
    """Measure every combination; returns a report even when interrupted (``.interrupted``).

    ``batches_per_process``: measure all batch sizes of a configuration in one process (faster;
    ``shiwu tune`` uses it) instead of one process each (honest peak memory per batch size).
    ``cold``: also measure cold starts with an empty cache (a process per backend, precision
    and size). ``remeasure``: measure a configuration again when its process had to fill the
    export cache first (exporting imports torch, so its memory and start were not the cached
    ones); ``shiwu tune``, which needs neither, turns it off.
    """
    from tqdm import tqdm

    from ..cache import cache_dir
    from ..cpu import default_threads
    from ..models.registry import ModelRef, get_model

    started = time.perf_counter()
    spec = get_model(model)
    spec.weights_path()  # missing weights: say so before measuring anything
    native = spec.preprocessing.size
    # A graph file (the user's .onnx / .xml) runs only in the runtimes that read it: rows for
    # the others would all say so; its fp32 reference is the first of those runtimes.
    backends = [b for b in dict.fromkeys(backends) if spec.supports(b)] or list(spec.runtimes or ())
    reference_backend = "torch" if spec.supports("torch") else spec.runtimes[0]
    precisions = list(dict.fromkeys(precisions))
    sizes = list(dict.fromkeys(sizes or [native]))
    threads = list(dict.fromkeys(threads or [default_threads()]))
    batches = list(dict.fromkeys(batches))
    photos = agreement_photos(images, agreement_images)
    report = BenchReport(
        model=spec.name, native_size=native, machine=machine_info(),
        reference={"backend": reference_backend, "precision": "fp32", "size": native},
        images={"source": str(images) if images else "bundled calibration photos",
                "photos": len(photos), "count": 0, "unreadable": []},
        seconds=seconds)
    report.rows = [Row(b, p, s, t, n) for b, p, s, t, n in product(backends, precisions, sizes, threads, batches)]
    for row in report.rows:
        row.batch = int(row.batch)

    groups: dict[tuple, list[Row]] = {}
    for row in report.rows:
        groups.setdefault((row.backend, row.precision, row.size), []).append(row)
    per_group = (1 if batches_per_process else len(batches)) * len(threads) + (1 if cold else 0)
    bar = tqdm(total=1 + len(groups) * per_group, desc="shiwu bench", unit="run", file=sys.stderr,
               disable=not progress, dynamic_ncols=True, leave=False)
    workdir = Path(tempfile.mkdtemp(prefix="shiwu-bench-"))
    runner = _Runner(workdir, timeout)
    real_cache = cache_dir()
    try:
        pre = {s: spec.preprocessing.with_size(s) for s in sorted(set(sizes) | {native})}
        arrays, unreadable = prepare_inputs(photos, pre, agreement_images)
        import numpy as np
        inputs = {}
        for size, array in arrays.items():
            inputs[size] = str(workdir / f"inputs-{size}.npy")
            np.save(inputs[size], array)
        report.images["count"] = int(len(arrays[native]))
        report.images["unreadable"] = unreadable
        first_photo = next(str(p) for p in photos if str(p) not in unreadable)
        base_job = {"model": ModelRef.of(model).to_dict(), "seconds": seconds, "photo": first_photo}

        bar.set_postfix_str("fp32 reference")
        reference = runner.run({**base_job, "mode": "reference", "backend": reference_backend, "precision": "fp32",
                                "size": native, "threads": max(threads), "batches": [max(batches)],
                                "inputs": inputs[native]})
        bar.update()
        if reference.get("status") != "ok":
            raise BenchError(f"the fp32 reference ({reference_backend}, {native}px) could not run: "
                             f"{reference.get('error')}")
        ref_top1 = np.asarray(reference["top1"])
        ref_embeddings = np.load(reference["embeddings"]) if reference.get("embeddings") else None

        for (backend, precision, size), rows in groups.items():
            unavailable: str | None = None
            jobs = ([[r for r in rows if r.threads == t] for t in threads] if batches_per_process
                    else [[r] for r in rows])
            for job_rows in jobs:
                if unavailable is not None:
                    for row in job_rows:
                        row.status, row.error = "unavailable", unavailable
                    bar.update()
                    continue
                bar.set_postfix_str(job_rows[0].config.label if len(job_rows) == 1 else
                                    f"{backend} {precision} {size}px {job_rows[0].threads}t")
                before = _cache_state(real_cache)
                job = {**base_job, "mode": "measure", "backend": backend, "precision": precision,
                       "size": size, "threads": job_rows[0].threads, "batches": [r.batch for r in job_rows],
                       "inputs": inputs[size]}
                result = runner.run(job)
                # This process filled the cache (export, int8 model, compiled blobs): its start
                # was not a cached one, and exporting (torch) inflated its memory. Measure again,
                # now that the cache is filled; else (tune) mark those two figures.
                filled = result.get("status") == "ok" and _cache_state(real_cache) != before
                if filled and remeasure:
                    result, filled = runner.run(job), False
                if result.get("status") == "unavailable":
                    unavailable = result.get("error")
                _apply(job_rows, result, ref_top1, ref_embeddings)
                for row in job_rows:
                    row.filled_cache = filled
                bar.update()
                for row in job_rows:
                    if on_row:
                        on_row(row)
            if cold:
                if unavailable is None and any(r.ok for r in rows):
                    bar.set_postfix_str(f"{backend} {precision} {size}px, empty cache")
                    fresh = tempfile.mkdtemp(prefix="shiwu-bench-cache-")
                    try:
                        result = runner.run({**base_job, "mode": "cold", "backend": backend,
                                             "precision": precision, "size": size,
                                             "threads": max(threads), "batches": [1],
                                             "inputs": inputs[size]}, cache=fresh)
                    finally:
                        shutil.rmtree(fresh, ignore_errors=True)
                    for row in rows:
                        row.cold_start_no_cache_s = result.get("cold_start_s")
                bar.update()
    except (_Interrupted, KeyboardInterrupt):
        report.interrupted = True
    finally:
        bar.close()
        shutil.rmtree(workdir, ignore_errors=True)
        report.wall_seconds = time.perf_counter() - started
    return report


def _apply(rows: list[Row], result: dict, ref_top1, ref_embeddings=None) -> None:
    import numpy as np

    status = result.get("status", "failed")
    for row in rows:
        row.status = status
        row.error = result.get("error")
        if status != "ok":
            continue
        row.runs_as = result.get("runs_as")
        row.peak_rss_mb = result.get("peak_rss_mb")
        row.cold_start_s = result.get("cold_start_s")
        timing = result["timings"].get(str(row.batch))
        if timing:
            per_image = [t / row.batch * 1e3 for t in timing]
            row.ms_p50 = round(statistics.median(per_image), 4)
            row.ms_p95 = round(percentile(per_image, 95), 4)
            row.images_per_s = round(row.batch * len(timing) / sum(timing), 3)
            row.calls = len(timing)
        top1 = np.asarray(result["top1"])
        row.agreement = float(np.mean(top1 == ref_top1))
        if ref_embeddings is not None and result.get("embeddings"):
            # both are L2-normalised: the row-wise dot product is the cosine similarity
            cosine = np.sum(np.load(result["embeddings"]) * ref_embeddings, axis=1)
            row.embedding_cosine = round(float(cosine.mean()), 6)
            row.embedding_cosine_min = round(float(cosine.min()), 6)
        row.agreement_images = int(len(top1))


