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
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from itertools import product
from pathlib import Path
from typing import Callable, Iterable, Sequence

DEFAULT_BACKENDS = ("torch", "torchscript", "onnxruntime", "openvino")
DEFAULT_BATCHES = (1, 8)
DEFAULT_SECONDS = 2.0
DEFAULT_AGREEMENT_IMAGES = 144   # 16 views of each of the 9 bundled photos
VIEW_SEED = 7                    # not the int8 calibration's (1234) nor its check's (99)
JOB_TIMEOUT = 900.0              # seconds; int8 calibration of a large model takes minutes


class PlotUnavailable(RuntimeError):
    """--plot needs matplotlib."""


class BenchError(RuntimeError):
    """Nothing can be measured (e.g. the fp32 reference itself cannot run)."""


# --- measuring, shared with benchmarks/ --------------------------------------------------------

def call_times(run: Callable[[], object], seconds: float, *, warmup: int = 2,
               min_calls: int = 5, max_calls: int = 100_000) -> list[float]:
    """Seconds per call of ``run()`` after ``warmup`` calls, for about ``seconds`` (at least
    ``min_calls`` calls)."""
    for _ in range(warmup):
        run()
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(times) < min_calls or (time.perf_counter() < deadline and len(times) < max_calls):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return times


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile, ``q`` in 0..100."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    k = (len(ordered) - 1) * q / 100
    low, high = math.floor(k), math.ceil(k)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM), in MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


# --- the photos everything is compared on --------------------------------------------------------

def agreement_photos(folder: str | Path | None, count: int) -> list[Path]:
    """The photos given (evenly sampled down to ``count``), else shiwu's bundled ones."""
    from .calibrate import bundled_photos, photos_in

    photos = photos_in(folder) if folder else bundled_photos()
    if len(photos) > count:
        step = len(photos) / count
        photos = [photos[int(i * step)] for i in range(count)]
    return photos


def prepare_inputs(photos: Sequence[Path], preprocessings: dict, count: int,
                   seed: int = VIEW_SEED) -> tuple[dict, list[str]]:
    """``count`` views of the photos (each photo itself first, then random crops, flips and
    lighting), preprocessed at every size in ``preprocessings`` from the *same* views, so all
    sizes are compared on the same pictures. Returns {size: (N, 3, S, S) float32} and the
    photos that could not be read."""
    import numpy as np

    from .calibrate import views
    from .images import ImageError, load_image

    per_photo = max(1, -(-count // max(1, len(photos))))
    largest = max(p.resize_short for p in preprocessings.values())
    rng = np.random.default_rng(seed)
    arrays: dict[int, list] = {size: [] for size in preprocessings}
    unreadable = []
    for path in photos:
        try:
            photo = load_image(path, min_size=2 * largest)
        except ImageError:
            unreadable.append(str(path))
            continue
        short = min(photo.size)
        if short > 2 * largest:  # views of a 12-megapixel photo need not be 12 megapixels
            scale = 2 * largest / short
            photo = photo.resize((max(1, round(photo.width * scale)), max(1, round(photo.height * scale))))
        for view in views(photo, per_photo, rng):
            for size, pre in preprocessings.items():
                arrays[size].append(pre(view))
    if not arrays or not next(iter(arrays.values())):
        raise FileNotFoundError("none of the photos could be read")
    return {size: np.stack(a[:count]) for size, a in arrays.items()}, unreadable


# --- what is measured ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Config:
    backend: str
    precision: str
    size: int
    threads: int
    batch: int

    @property
    def label(self) -> str:
        return f"{self.backend} {self.precision} {self.size}px {self.threads}t b{self.batch}"


@dataclass
class Row:
    """One configuration's figures (times per image in ms; memory in MiB; cold starts in s)."""

    backend: str
    precision: str
    size: int
    threads: int
    batch: int
    status: str = "not measured"       # ok | unavailable | failed | not measured
    error: str | None = None
    runs_as: str | None = None         # the backend actually used ("auto" resolves to one)
    ms_p50: float | None = None        # model latency per image: call time / batch
    ms_p95: float | None = None
    images_per_s: float | None = None
    calls: int | None = None
    peak_rss_mb: float | None = None
    cold_start_s: float | None = None          # with the cache as it is (exports present)
    cold_start_no_cache_s: float | None = None  # with a fresh, empty cache
    agreement: float | None = None              # top-1 agreement with the fp32 reference
    agreement_images: int | None = None

    @property
    def config(self) -> Config:
        return Config(self.backend, self.precision, self.size, self.threads, self.batch)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass
class BenchReport:
    model: str
    native_size: int
    machine: dict
    reference: dict
    images: dict
    seconds: float
    rows: list[Row] = field(default_factory=list)
    interrupted: bool = False
    wall_seconds: float = 0.0

    def to_dict(self) -> dict:
        out = asdict(self)
        out["rows"] = [asdict(r) for r in self.rows]
        return out

    def baseline(self, row: Row) -> Row | None:
        """torch fp32 at the model's size with the same threads and batch, if it was measured."""
        for other in self.rows:
            if (other.ok and other.backend == "torch" and other.precision == "fp32"
                    and other.size == self.native_size and other.threads == row.threads
                    and other.batch == row.batch):
                return other
        return None


def _fmt(value, spec: str, missing: str = "") -> str:
    return missing if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def _cell(text: str) -> str:
    return " ".join(text.replace("|", "\\|").split())


def format_table(report: BenchReport) -> str:
    """A Markdown table like the article's, with a short header saying what was measured."""
    m = report.machine
    ref = report.reference
    lines = [
        f"{report.model} on {m.get('cpu', '?')} ({m.get('physical_cores', '?')} cores); "
        f"model-only latency per image over {report.seconds:g} s per configuration; "
        f"top-1 agreement with {ref['backend']} {ref['precision']} {ref['size']}px on "
        f"{report.images['count']} views of {report.images['photos']} photos "
        f"({report.images['source']})",
    ]
    load, cpus = m.get("load_average_1min_at_start"), m.get("cpus_usable") or 1
    if load is not None and load > 0.5 * cpus:
        lines.append(f"note: the load average was {load:.1f} on {cpus} CPUs when the bench started: "
                     "other programs were busy, so the timings are noisy (compare rows of one run only)")
    lines += [
        "",
        "| backend | precision | size | threads | batch | p50 ms/img | p95 ms/img | images/s "
        "| vs torch fp32 | peak RSS MB | cold start s | cold, no cache s | top-1 agreement |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    previous_why = None
    for row in report.rows:
        head = f"| {row.backend} | {row.precision} | {row.size} | {row.threads} | {row.batch} "
        if not row.ok:
            why = row.status if not row.error else f"{row.status}: {row.error}"
            if why == previous_why:
                why = f"{row.status}: as above"
            else:
                previous_why = why
            if len(why) > 160:
                why = why[:157] + "..."
            lines.append(head + f"| {_cell(why)} | | | | | | | |")
            continue
        previous_why = None
        base = report.baseline(row)
        ratio = f"{row.images_per_s / base.images_per_s:.2f}x" if base and base.images_per_s else ""
        backend = row.backend if row.runs_as in (None, row.backend) else f"{row.backend} ({row.runs_as})"
        head = f"| {backend} | {row.precision} | {row.size} | {row.threads} | {row.batch} "
        lines.append(head + f"| {_fmt(row.ms_p50, '.2f')} | {_fmt(row.ms_p95, '.2f')} "
                     f"| {_fmt(row.images_per_s, '.1f')} | {ratio} | {_fmt(row.peak_rss_mb, '.0f')} "
                     f"| {_fmt(row.cold_start_s, '.2f')} | {_fmt(row.cold_start_no_cache_s, '.2f')} "
                     f"| {_fmt(row.agreement, '.1%')} |")
    measured = sum(r.ok for r in report.rows)
    if report.interrupted:
        lines.append("")
        lines.append(f"interrupted: {measured} of {len(report.rows)} configurations measured")
    return "\n".join(lines)


def plot(report: BenchReport, path: str | Path) -> Path:
    """Latency per image against top-1 agreement, one point per measured configuration."""
    plt = _pyplot()
    rows = [r for r in report.rows if r.ok and r.ms_p50 is not None and r.agreement is not None]
    fig, ax = plt.subplots(figsize=(9, 6), dpi=120)
    markers = {"fp32": "o", "bf16": "s", "int8": "^"}
    backends = sorted({r.backend for r in rows})
    colours = {b: plt.get_cmap("tab10")(i % 10) for i, b in enumerate(backends)}
    for i, row in enumerate(sorted(rows, key=lambda r: (r.agreement, r.ms_p50))):
        ax.scatter(row.ms_p50, row.agreement * 100, marker=markers.get(row.precision, "o"),
                   color=colours[row.backend], s=30 + 6 * row.batch, alpha=0.8)
        # neighbours at the same agreement get labels at different heights
        ax.annotate(f"{row.backend} {row.precision} {row.size}px t{row.threads} b{row.batch}",
                    (row.ms_p50, row.agreement * 100), fontsize=7, xytext=(4, 3 + 8 * (i % 3)),
                    textcoords="offset points", color=colours[row.backend])
    for name in backends:
        ax.scatter([], [], color=colours[name], label=name)
    for precision, marker in markers.items():
        if any(r.precision == precision for r in rows):
            ax.scatter([], [], color="grey", marker=marker, label=precision)
    ax.set_xscale("log")
    from matplotlib.ticker import FormatStrFormatter
    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(FormatStrFormatter("%g"))
    if rows:
        low = min(r.agreement for r in rows) * 100
        span = max(2.0, 100 - low)
        ax.set_ylim(max(0, low - 0.1 * span), 100 + 0.12 * span)   # room for the labels
    ax.set_xlabel("model latency per image, p50 (ms, log scale)")
    ax.set_ylabel(f"top-1 agreement with {report.reference['backend']} fp32 "
                  f"{report.reference['size']}px (%)")
    ax.set_title(f"shiwu bench: {report.model} on {report.machine.get('cpu', '')}", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    if rows:
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise PlotUnavailable("--plot needs matplotlib: pip install 'shiwu[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def check_plot_available() -> None:
    _pyplot()


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

    from . import __version__
    from .cpu import cpu_features, cpu_model, default_threads, physical_cores, usable_cpus

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

    from .backends.cache import cache_dir
    from .cpu import default_threads
    from .models.registry import ModelRef, get_model

    started = time.perf_counter()
    spec = get_model(model)
    spec.weights_path()  # missing weights: say so before measuring anything
    native = spec.preprocessing.size
    backends = list(dict.fromkeys(backends))
    precisions = list(dict.fromkeys(precisions))
    sizes = list(dict.fromkeys(sizes or [native]))
    threads = list(dict.fromkeys(threads or [default_threads()]))
    batches = list(dict.fromkeys(batches))
    photos = agreement_photos(images, agreement_images)
    report = BenchReport(
        model=spec.name, native_size=native, machine=machine_info(),
        reference={"backend": "torch", "precision": "fp32", "size": native},
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
        reference = runner.run({**base_job, "mode": "reference", "backend": "torch", "precision": "fp32",
                                "size": native, "threads": max(threads), "batches": [max(batches)],
                                "inputs": inputs[native]})
        bar.update()
        if reference.get("status") != "ok":
            raise BenchError(f"the fp32 reference (torch, {native}px) could not run: {reference.get('error')}")
        ref_top1 = np.asarray(reference["top1"])

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
                before = _cache_state(real_cache) if remeasure else None
                job = {**base_job, "mode": "measure", "backend": backend, "precision": precision,
                       "size": size, "threads": job_rows[0].threads, "batches": [r.batch for r in job_rows],
                       "inputs": inputs[size]}
                result = runner.run(job)
                if remeasure and result.get("status") == "ok" and _cache_state(real_cache) != before:
                    # This process filled the cache (export, int8 model, compiled blobs): its
                    # start was not a cached one, and exporting (torch) inflated its memory.
                    # Measure again, now that the cache is filled.
                    result = runner.run(job)
                if result.get("status") == "unavailable":
                    unavailable = result.get("error")
                _apply(job_rows, result, ref_top1)
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


def _apply(rows: list[Row], result: dict, ref_top1) -> None:
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
        row.agreement_images = int(len(top1))


# --- the worker: one configuration in a fresh process ----------------------------------------------

def _worker(job_path: str) -> int:
    job = json.loads(Path(job_path).read_text(encoding="utf-8"))
    out = Path(job["result"])
    result: dict = {"status": "ok"}
    try:
        result.update(_work(job))
    except Exception as exc:  # every failure becomes a row that says why
        from .backends import BackendUnavailable

        result = {"status": "unavailable" if isinstance(exc, BackendUnavailable) else "failed",
                  "error": str(exc) if isinstance(exc, BackendUnavailable) else f"{type(exc).__name__}: {exc}"}
    out.write_text(json.dumps(result), encoding="utf-8")
    return 0


def _work(job: dict) -> dict:
    import numpy as np

    from .recognizer import Recognizer

    mode = job["mode"]
    batches = [int(b) for b in job["batches"]]
    result: dict = {}
    recognizer = Recognizer(job["model"], backend=job["backend"], precision=job["precision"],
                            threads=job["threads"], size=job["size"], batch_size=max(batches))
    if mode != "reference":
        recognizer.predict(job["photo"], topk=5)  # the first answer, as `shiwu predict` gives it
        result["first_answer_at"] = time.monotonic()
        result["runs_as"] = recognizer.backend.name
        if mode == "cold":
            result["peak_rss_mb"] = round(peak_rss_mb(), 1)
            return result
    inputs = np.load(job["inputs"], mmap_mode="r")
    run = recognizer.backend.run
    if mode == "measure":
        timings = {}
        for n in batches:
            reps = -(-n // len(inputs))
            batch = np.ascontiguousarray(np.concatenate([inputs] * reps)[:n] if reps > 1 else inputs[:n])
            timings[str(n)] = call_times(lambda: run(batch), float(job["seconds"]))
        result["timings"] = timings
        result["peak_rss_mb"] = round(peak_rss_mb(), 1)  # before the agreement pass below
    chunk = max(batches)
    top1 = []
    for i in range(0, len(inputs), chunk):
        top1.append(run(np.ascontiguousarray(inputs[i:i + chunk])).argmax(1))
    result["top1"] = np.concatenate(top1).tolist()
    return result


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        sys.exit(_worker(sys.argv[2]))
    print("usage: shiwu bench (this module's own entry point is for its worker processes)",
          file=sys.stderr)
    sys.exit(2)
