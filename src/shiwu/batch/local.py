"""The local engine: decode in worker processes, infer in batches in this one, overlapped.

Worker processes decode and preprocess whole batches (JPEG draft decoding, resize, crop,
normalise) while this process runs the model on the batch before; a few batches are kept in
flight so the model never waits for a decoder unless decoding is really the slower side.
Workers are started with ``spawn``: they import Pillow and numpy, never torch or a runtime, and
do not inherit the inference threads of this process.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np

from ..images import DEFAULT_MAX_PIXELS, ImageError, load_image
from ..preprocess import Preprocessing


@dataclass(frozen=True)
class ModelOptions:
    """Everything needed to build the same Recognizer in any process (picklable)."""

    model: str | None = None
    backend: str = "auto"
    precision: str = "fp32"
    threads: int | None = None
    size: int | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS

    def recognizer(self, batch_size: int = 32):
        from ..recognizer import Recognizer

        return Recognizer(self.model, backend=self.backend, precision=self.precision,
                          threads=self.threads, size=self.size, batch_size=batch_size,
                          max_pixels=self.max_pixels)


@dataclass
class Decoded:
    """One batch after decoding: arrays for the good images, an error for each bad one."""

    ok: list[int]                       # positions in the batch that decoded
    pixels: np.ndarray                  # (len(ok), 3, S, S) float32
    errors: dict[int, tuple[str, str]]  # position -> (error type, message)


def error_of(exc: BaseException) -> tuple[str, str]:
    if isinstance(exc, ImageError):
        return type(exc).__name__, exc.reason
    return type(exc).__name__, str(exc) or repr(exc)


def decode_batch(paths: Sequence[str], preprocessing: Preprocessing,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> Decoded:
    """Decode and preprocess ``paths``; a bad file becomes an error, never an exception."""
    ok: list[int] = []
    arrays: list[np.ndarray] = []
    errors: dict[int, tuple[str, str]] = {}
    # JPEG draft decoding down to what the crop needs (a model may ask for full-size decoding)
    min_size = getattr(preprocessing, "decode_min_size", preprocessing.resize_short)
    for position, path in enumerate(paths):
        try:
            image = load_image(path, min_size=min_size, max_pixels=max_pixels)
            arrays.append(preprocessing(image))
            ok.append(position)
        except MemoryError:
            errors[position] = ("ImageError", "not enough memory to decode this image")
        except Exception as exc:  # noqa: BLE001 - any failure is this image's, not the run's
            errors[position] = error_of(exc)
    size = preprocessing.size
    pixels = np.stack(arrays) if arrays else np.empty((0, 3, size, size), np.float32)
    return Decoded(ok, pixels, errors)


_worker_state: dict = {}


def _init_worker(preprocessing: Preprocessing, max_pixels: int) -> None:
    # Ctrl-C reaches the whole process group: the main process decides when to stop (after the
    # current batch); workers just finish what they hold.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker_state.update(preprocessing=preprocessing, max_pixels=max_pixels)
    _die_with_parent()


def _die_with_parent() -> None:
    """On Linux, ask the kernel to end this worker if the main process is killed (kill -9)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() == 1:  # the parent already died before prctl
            os._exit(0)
    except (OSError, AttributeError):
        pass


def _decode_in_worker(paths: Sequence[str]) -> Decoded:
    return decode_batch(paths, _worker_state["preprocessing"], _worker_state["max_pixels"])


def rows_for(paths: Sequence[str], decoded: Decoded, recognizer, topk: int) -> list[dict]:
    """DESIGN.md JSON rows for one batch, in input order."""
    from ..recognizer import Result

    predictions = recognizer.predict_arrays(decoded.pixels, topk) if decoded.ok else []
    by_position = dict(zip(decoded.ok, predictions))
    rows = []
    for position, path in enumerate(paths):
        result = Result(path, predictions=by_position.get(position, []),
                        model=recognizer.model_name, backend=recognizer.backend.name,
                        precision=recognizer.backend.precision)
        row = result.to_dict()
        if position in decoded.errors:
            kind, message = decoded.errors[position]
            row["error"] = {"type": kind, "message": message}
        rows.append(row)
    return rows


def default_workers() -> int:
    """Decode processes: one per two usable CPUs, at least one.

    Decoding a 640x480 JPEG and preparing it costs a few milliseconds, a fraction of what the
    model costs; more decoders than that only take cores away from inference.
    """
    from ..cpu import usable_cpus

    return max(1, len(usable_cpus()) // 2)


def run_local(paths: Sequence[str], options: ModelOptions, *, topk: int = 5, batch_size: int = 32,
              workers: int | None = None, should_stop: Callable[[], bool] = lambda: False,
              on_ready: Callable[[object], None] | None = None) -> Iterator[list[dict]]:
    """Yield the rows of each batch of ``paths``, in order, until done or ``should_stop()``.

    ``workers=0`` decodes in this process (no overlap; for debugging and one-core machines).
    """
    recognizer = options.recognizer(batch_size)
    if on_ready is not None:
        on_ready(recognizer)
    preprocessing = recognizer.preprocessing
    chunks = [paths[i:i + batch_size] for i in range(0, len(paths), batch_size)]
    workers = default_workers() if workers is None else workers
    if workers <= 0 or not chunks:
        for chunk in chunks:
            yield rows_for(chunk, decode_batch(chunk, preprocessing, options.max_pixels),
                           recognizer, topk)
            if should_stop():
                return
        return

    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_worker, initargs=(preprocessing, options.max_pixels))
    depth = 2 * workers  # batches decoding or decoded ahead of the model
    pending: deque = deque()
    next_chunk = 0
    try:
        while next_chunk < len(chunks) or pending:
            while next_chunk < len(chunks) and len(pending) < depth:
                chunk = chunks[next_chunk]
                pending.append((chunk, pool.submit(_decode_in_worker, chunk)))
                next_chunk += 1
            chunk, future = pending.popleft()
            try:
                decoded = future.result()
            except BrokenProcessPool:
                # A decoder crashed (a C-level fault in an image library). Decode this batch
                # here instead, image by image, in a fresh process each, to find the culprit.
                pool.shutdown(wait=False, cancel_futures=True)
                decoded = _decode_isolated(chunk, preprocessing, options.max_pixels)
                pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                           initializer=_init_worker,
                                           initargs=(preprocessing, options.max_pixels))
                retry = [c for c, _ in pending]
                pending.clear()
                for c in retry:
                    pending.append((c, pool.submit(_decode_in_worker, c)))
            yield rows_for(chunk, decoded, recognizer, topk)
            if should_stop():
                return
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _decode_isolated(paths: Sequence[str], preprocessing: Preprocessing, max_pixels: int) -> Decoded:
    ok, arrays, errors = [], [], {}
    context = multiprocessing.get_context("spawn")
    for position, path in enumerate(paths):
        with ProcessPoolExecutor(1, mp_context=context, initializer=_init_worker,
                                 initargs=(preprocessing, max_pixels)) as single:
            try:
                one = single.submit(_decode_in_worker, [path]).result()
            except BrokenProcessPool:
                errors[position] = ("ImageError", "the image decoder crashed on this file")
                continue
        if one.ok:
            ok.append(position)
            arrays.append(one.pixels[0])
        else:
            errors[position] = one.errors[0]
    size = preprocessing.size
    pixels = np.stack(arrays) if arrays else np.empty((0, 3, size, size), np.float32)
    return Decoded(ok, pixels, errors)
