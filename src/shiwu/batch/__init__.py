"""``shiwu batch``: label whole folders into JSON Lines, CSV or Parquet, resumably.

::

    from shiwu.batch import run_batch
    summary = run_batch(["照片/"], "results.jsonl", recursive=True, resume=True)

The package has three parts: ``sources`` (INPUT arguments to image paths), ``writers`` (result
files that survive kill -9 and resume) and the engines that turn paths into rows: ``local``
(decoder processes overlapped with batched inference on this machine) and ``ray_engine`` (the
same as a Ray Data pipeline, on one machine or a cluster). This module ties them together with
the progress bar, Ctrl-C handling and the summary.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

from ..images import DEFAULT_MAX_PIXELS
from .local import DecoderError, ModelOptions
from .sources import InputError, collect_images, image_key
from .writers import OutputError, OutputWriteError, open_writer

ENGINES = ("local", "ray")
MAX_ERRORS_SHOWN = 10

__all__ = ["run_batch", "BatchSummary", "ModelOptions", "InputError", "OutputError",
           "OutputWriteError", "DecoderError", "ENGINES"]


def plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


@dataclass
class BatchSummary:
    output: str
    total: int = 0              # images named by the inputs
    skipped: int = 0            # already in the output (--resume)
    done: int = 0               # rows written by this run
    failed: int = 0             # of those, rows with an error
    failed_before: int = 0      # error rows already in the output (--resume)
    retried: int = 0            # of the images done, rows with an error replaced (--retry-failed)
    actor_restarts: int = 0     # Ray inference actors that crashed and were restarted
    duplicates: int = 0         # rows an engine delivered twice, not written again
    seconds: float = 0.0        # wall time of this run, start-up included
    startup_seconds: float = 0.0  # until the first batch was written (model load, first decode)
    first_batch: int = 0        # rows in that first batch
    interrupted: bool = False
    engine: str = "local"
    model: str = ""
    backend: str = ""
    precision: str = ""
    failures: list = field(default_factory=list, repr=False)  # first few (image, message)

    @property
    def remaining(self) -> int:
        return self.total - self.skipped - self.done

    @property
    def images_per_second(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0

    steady_from: tuple = (0.0, 0)  # (seconds, rows done) where the steady part begins

    @property
    def steady_images_per_second(self) -> float:
        """Throughput once the pipeline is full: from the first batch after a quarter of the rows
        (model load, the first batch and the decoders' head start left out) to the end."""
        start, done = self.steady_from
        span, rest = self.seconds - start, self.done - done
        return rest / span if rest > 0 and span > 0 and done else self.images_per_second

    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("failures")
        data.pop("steady_from")
        data.update(remaining=self.remaining, images_per_second=round(self.images_per_second, 2),
                    steady_images_per_second=round(self.steady_images_per_second, 2),
                    seconds=round(self.seconds, 3), startup_seconds=round(self.startup_seconds, 3))
        return data

    def format(self) -> str:
        if not self.done and not self.interrupted:
            everything = ("the 1 image is" if self.total == 1
                          else f"all {self.total} images are")
            lines = [f"nothing to do: {everything} already in {self.output}"]
            if self.failed_before:
                lines.append(f"{self.failed_before} of them failed (rows with an \"error\"; "
                             "--retry-failed tries them again)")
            return "\n".join(lines)
        first = (f"{plural(self.done, 'image')} in {self.seconds:.1f} s "
                 f"({self.images_per_second:.1f} images/s; "
                 f"{self.steady_images_per_second:.1f} images/s after start-up), "
                 f"{self.done - self.failed} recognised, {self.failed} failed")
        if self.skipped:
            first += f", {self.skipped} skipped (already in {self.output})"
        lines = [first]
        if self.retried:
            lines.append(f"{plural(self.retried, 'failed image')} from earlier runs tried again "
                         "(their old rows replaced)")
        if self.actor_restarts:
            lines.append(f"{plural(self.actor_restarts, 'inference actor')} crashed and "
                         "restarted; their batches were run again (each image written once)")
        if self.failed_before:
            lines.append(f"{plural(self.failed_before, 'failed image')} from earlier runs "
                         f"{'is' if self.failed_before == 1 else 'are'} in {self.output}")
        if self.interrupted:
            lines.append(f"interrupted: {self.remaining} images left; run the same command with "
                         "--resume to finish")
        if self.failed or self.failed_before:
            lines.append("failed images have an \"error\" in their row "
                         "(columns error_type, error_message in CSV/Parquet)")
        return "\n".join(lines)


class _StopFlag:
    """Set by the first Ctrl-C (or SIGTERM): finish the current batch, write it, stop. A second
    Ctrl-C stops at once (rows already written stay valid)."""

    def __init__(self, say: Callable[[str], None]):
        self.event = threading.Event()
        self.say = say
        self.previous: dict = {}

    def __call__(self) -> bool:
        return self.event.is_set()

    def _handle(self, signum, frame):
        if self.event.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.event.set()
        self.say("shiwu: stopping after the current batch (press Ctrl-C again to stop now)")

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous.clear()


def _ignore_sigxfsz():
    """Writing past the process's file size limit (RLIMIT_FSIZE) kills a process with SIGXFSZ
    by default, mid-row and without a word. The python executable ignores it at start-up, but an
    application embedding Python may not: ignored, the write fails with EFBIG and the run stops
    with a clear error instead."""
    if not hasattr(signal, "SIGXFSZ") or threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def _restore_sigxfsz(previous) -> None:
    if previous is not None:
        signal.signal(signal.SIGXFSZ, previous)


def run_batch(inputs: Sequence[str], out: str, *, recursive: bool = False, resume: bool = False,
              overwrite: bool = False, model: str | None = None, backend: str | None = None,
              precision: str | None = None, threads: int | None = None, size: int | None = None,
              max_pixels: int = DEFAULT_MAX_PIXELS, topk: int = 5, batch_size: int = 32,
              workers: int | None = None, streams: int | None = None, engine: str = "local",
              address: str | None = None,
              actors: int | None = None, calibration: str | None = None,
              progress: bool = True, stdin=None, null: bool = False, retry_failed: bool = False,
              log: Callable[[str], None] | None = None) -> BatchSummary:
    """Recognise every image named by ``inputs`` and write one row per image to ``out``.

    Images are identified by their resolved real path (``sources.image_key``): each is done
    once however it is spelled, and ``resume`` matches rows written with any spelling.
    ``retry_failed`` (implies ``resume``) runs the images whose rows have an error again and
    replaces those rows.

    Raises InputError / OutputError (and ModelNotFound, BackendUnavailable) for problems that
    stop the run before it starts; a bad image never raises, it becomes a row with an error.
    OutputWriteError (disk full) stops a run half-way, with every row written before intact.
    """
    from tqdm import tqdm

    if engine not in ENGINES:
        raise InputError(f"unknown engine {engine!r}; choose from {', '.join(ENGINES)}")
    started = time.perf_counter()
    say = log or (lambda message: tqdm.write(message, file=sys.stderr))
    if retry_failed and overwrite:
        raise OutputError("--retry-failed and --overwrite contradict each other; choose one")
    resume = resume or retry_failed
    paths = collect_images(inputs, recursive=recursive, stdin=stdin, null=null)
    if not paths:
        hint = "" if recursive else " (add --recursive to look into sub-folders)"
        raise InputError(f"no images found in {', '.join(map(str, inputs))}{hint}")
    # None: `shiwu tune`'s settings for this model apply (in the Recognizer), else auto / fp32 /
    # the model's size. The size is resolved here, once, so decoders (and Ray workers on other
    # machines) cut images at the size the model runs at. Tuned threads are not used: the
    # engines split the cores between their streams themselves.
    from ..config import resolve
    from ..models.registry import get_model
    spec = get_model(model)
    size = resolve(spec.name, backend=backend, precision=precision, size=size).size
    if spec.num_classes and topk > spec.num_classes:
        # more labels than the model has would only add empty columns; and JSONL resume
        # compares --topk with the rows' prediction count, so clamp before opening the output
        say(f"shiwu: warning: --topk {topk} is more than the {spec.num_classes} classes of "
            f"{spec.name}; writing {spec.num_classes}")
        topk = spec.num_classes
    options = ModelOptions(model, backend, precision, threads, size, max_pixels, calibration)
    writer = open_writer(out, topk=topk, resume=resume, overwrite=overwrite, model=spec.name)
    summary = BatchSummary(output=str(out), total=len(paths), engine=engine)
    stop = _StopFlag(say)
    bar = None
    old_xfsz = _ignore_sigxfsz()
    try:
        keys = [image_key(p) for p in paths]
        if retry_failed:
            summary.retried = writer.drop(set(keys) & writer.failed)
        todo = [p for p, key in zip(paths, keys) if key not in writer.done]
        keys_of = dict(zip(paths, keys))
        summary.skipped = len(paths) - len(todo)
        summary.failed_before = writer.failed_before
        if writer.done and not summary.skipped:
            say(f"shiwu: warning: none of these images are among the {len(writer.done)} already in "
                f"{out}; rows are matched by the file each path resolves to (relative paths from "
                "the current folder)")
        if not todo:
            summary.seconds = time.perf_counter() - started
            return summary
        stop.install()
        bar = tqdm(total=len(todo), unit="img", desc="shiwu batch", file=sys.stderr,
                   disable=not progress, dynamic_ncols=True, smoothing=0.1,
                   mininterval=0.5 if sys.stderr.isatty() else 30)

        def ready(recognizer) -> None:
            summary.model = recognizer.model_name
            summary.backend = recognizer.backend.name
            summary.precision = recognizer.backend.precision

        ray_stats: dict = {}
        if engine == "ray":
            from .ray_engine import run_ray
            batches = run_ray(todo, options, topk=topk, batch_size=batch_size, workers=workers,
                              address=address, actors=actors, should_stop=stop, stats=ray_stats)
        else:
            from .local import run_local
            batches = run_local(todo, options, topk=topk, batch_size=batch_size, workers=workers,
                                streams=streams, should_stop=stop, on_ready=ready)
        written: set[str] = set()
        try:
            for rows in batches:
                # an engine that runs a batch again after a crash (Ray retries a task whose
                # actor died) must not give an image two rows
                fresh = []
                for row in rows:
                    key = keys_of.get(row["image"]) or image_key(row["image"])
                    if key in written:
                        summary.duplicates += 1
                        continue
                    written.add(key)
                    row["path"] = key  # the identity, beside the spelling (writers.PATH_COLUMN)
                    fresh.append(row)
                rows = fresh
                if not rows:
                    continue
                writer.write(rows)
                if not summary.done:
                    summary.startup_seconds = time.perf_counter() - started
                    summary.first_batch = len(rows)
                    first = rows[0] if rows else {}
                    summary.model = summary.model or first.get("model", "")
                    summary.backend = summary.backend or first.get("backend", "")
                    summary.precision = summary.precision or first.get("precision", "")
                summary.done += len(rows)
                if not summary.steady_from[1] and summary.done >= max(len(todo) / 4, 2 * len(rows)):
                    summary.steady_from = (time.perf_counter() - started, summary.done)
                for row in rows:
                    if row.get("error"):
                        summary.failed += 1
                        if len(summary.failures) < MAX_ERRORS_SHOWN:
                            summary.failures.append((row["image"], row["error"]["message"]))
                            say(f"shiwu: {row['image']}: {row['error']['message']}")
                            if len(summary.failures) == MAX_ERRORS_SHOWN:
                                say("shiwu: (further failures are only reported in the output)")
                bar.update(len(rows))
                if summary.failed:
                    bar.set_postfix(failed=summary.failed, refresh=False)
                if stop():
                    break
        finally:
            batches.close()
            summary.actor_restarts = ray_stats.get("actor_restarts", 0)
        summary.interrupted = stop() and summary.remaining > 0
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        stop.restore()
        _restore_sigxfsz(old_xfsz)
        if bar is not None:
            bar.close()
        writer.close()
        summary.seconds = time.perf_counter() - started
    return summary
