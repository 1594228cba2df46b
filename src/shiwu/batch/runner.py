"""``run_batch``: inputs to a results file, through an engine, with the progress bar, Ctrl-C
handling and the summary."""

from __future__ import annotations

import sys
import time
from typing import Callable, Sequence

from ..display import printable
from ..filenames import readable
from ..images import DEFAULT_MAX_PIXELS
from .local import ModelOptions
from .output import PATH_COLUMN, OutputError, open_writer
from .sources import InputError, collect_images, image_key, no_images_found
from .stopping import StopFlag, ignore_sigxfsz, restore_sigxfsz
from .summary import BatchSummary, LineProgress

ENGINES = ("local", "ray")
MAX_ERRORS_SHOWN = 10


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
    # on a terminal, a message goes above the progress bar; elsewhere (a log file, a pipe) it is a
    # plain line, and so is the progress (summary.LineProgress): no carriage returns in a log
    terminal = sys.stderr.isatty()
    say = log or ((lambda message: tqdm.write(message, file=sys.stderr)) if terminal
                  else (lambda message: print(message, file=sys.stderr, flush=True)))
    if retry_failed and overwrite:
        raise OutputError("--retry-failed and --overwrite contradict each other; choose one")
    resume = resume or retry_failed
    paths = collect_images(inputs, recursive=recursive, stdin=stdin, null=null)
    if not paths:
        raise InputError(no_images_found(inputs, recursive=recursive))
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
    stop = StopFlag(say)
    bar = None
    old_xfsz = ignore_sigxfsz()
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
        if terminal:
            bar = tqdm(total=len(todo), unit="img", desc="shiwu batch", file=sys.stderr,
                       disable=not progress, dynamic_ncols=True, smoothing=0.1, mininterval=0.5)
        else:
            bar = LineProgress(len(todo), say=say, disable=not progress)

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
                    # the identity (lossless text), beside the spelling (readable text): a name
                    # that is not UTF-8 must not stop the run (see shiwu.filenames)
                    row[PATH_COLUMN] = key
                    row["image"] = readable(row["image"])
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
                            say(f"shiwu: {printable(row['image'])}: {printable(row['error']['message'])}")
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
        restore_sigxfsz(old_xfsz)
        if bar is not None:
            bar.close()
        writer.close()
        summary.seconds = time.perf_counter() - started
    return summary
