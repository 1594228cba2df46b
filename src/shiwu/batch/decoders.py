"""The decoding side of the local engine: processes that turn batches of paths into pixels.

Decoders are spawned processes (Pillow + numpy, no torch) that decode and preprocess whole
batches and write the pixels into shared-memory buffers (``SharedBatches``), so no pixels are
pickled back. For a runtime that normalises in its graph (``Recognizer.takes_pixels``) a batch
is the cropped uint8 (N, S, S, 3) pixels, a quarter of the bytes of the float32 (N, 3, S, S)
arrays the others take: less to write, to keep in flight and to read. A bad file becomes an error for its row, never an exception; a decoder that
crashes (a C-level fault in an image library) costs only the file that caused it
(``decode_isolated``).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..images import DEFAULT_MAX_PIXELS, ImageError, load_image
from ..preprocess import Preprocessing


class DecoderError(RuntimeError):
    """The decoder processes cannot run at all (not one bad image: the environment)."""


@dataclass
class Decoded:
    """One batch after decoding: arrays for the good images, an error for each bad one."""

    ok: list[int]                       # positions in the batch that decoded
    pixels: np.ndarray                  # (len(ok), 3, S, S) float32, or (len(ok), S, S, 3) uint8
    errors: dict[int, tuple[str, str]]  # position -> (error type, message)


def batch_layout(size: int, as_pixels: bool) -> tuple[tuple[int, int, int], type]:
    """(shape of one image, dtype): cropped uint8 HWC pixels, or normalised float32 CHW."""
    return ((size, size, 3), np.uint8) if as_pixels else ((3, size, size), np.float32)


def empty_batch(size: int, as_pixels: bool) -> np.ndarray:
    shape, dtype = batch_layout(size, as_pixels)
    return np.empty((0, *shape), dtype)


def error_of(exc: BaseException) -> tuple[str, str]:
    if isinstance(exc, ImageError):
        return type(exc).__name__, exc.reason
    return type(exc).__name__, str(exc) or repr(exc)


def decode_batch(paths: Sequence[str], preprocessing: Preprocessing,
                 max_pixels: int = DEFAULT_MAX_PIXELS, out: np.ndarray | None = None,
                 as_pixels: bool = False) -> Decoded:
    """Decode and preprocess ``paths``; a bad file becomes an error, never an exception.

    ``as_pixels``: each image as its cropped uint8 pixels (``preprocessing.pixels``), not
    normalised floats. With ``out`` (at least ``len(paths)`` rows), the good images are written
    to its first rows and ``pixels`` is a view of them.
    """
    prepare = preprocessing.pixels if as_pixels else preprocessing
    ok: list[int] = []
    arrays: list[np.ndarray] = []
    errors: dict[int, tuple[str, str]] = {}
    # JPEG draft decoding down to what the crop needs (a model may ask for full-size decoding)
    min_size = getattr(preprocessing, "decode_min_size", preprocessing.resize_short)
    for position, path in enumerate(paths):
        try:
            image = load_image(path, min_size=min_size, max_pixels=max_pixels)
            array = prepare(image)
            if out is not None:
                out[len(ok)] = array
            else:
                arrays.append(array)
            ok.append(position)
        except MemoryError:
            errors[position] = ("ImageError", "not enough memory to decode this image")
        except Exception as exc:  # noqa: BLE001 - any failure is this image's, not the run's
            errors[position] = error_of(exc)
    if out is not None:
        return Decoded(ok, out[:len(ok)], errors)
    pixels = np.stack(arrays) if arrays else empty_batch(preprocessing.size, as_pixels)
    return Decoded(ok, pixels, errors)


class SharedBatches:
    """Shared-memory batch buffers that decoders write into, so no pixels are pickled.

    Sending a decoded batch of 32 back through a pipe costs the inference process about 0.7 ms
    of CPU per image (unpickling 19 MB), which is several percent of EfficientNet-Lite0's
    inference time. Each buffer is an anonymous memory file (``memfd_create``): it has no name
    in /dev/shm, the decoders receive its descriptor when they start (``shared_fds``), and the
    kernel frees it when the last process holding it ends, so not even a kill -9 of the whole
    process group (resource tracker included) can leave one behind.
    """

    def __init__(self, count: int, batch_size: int, size: int, as_pixels: bool = False):
        import mmap

        image, dtype = batch_layout(size, as_pixels)
        self.shape = (batch_size, *image)
        self.dtype = np.dtype(dtype)
        self.nbytes = int(np.prod(self.shape)) * self.dtype.itemsize  # of one buffer
        self.fds: list[int] = []
        self.maps: list = []
        try:
            for slot in range(count):
                fd = os.memfd_create(f"shiwu-{os.getpid()}-batch-{slot}", os.MFD_CLOEXEC)
                self.fds.append(fd)
                os.ftruncate(fd, self.nbytes)
                self.maps.append(mmap.mmap(fd, self.nbytes))
        except BaseException:
            self.close()
            raise
        self.free = deque(range(count))

    def shared_fds(self) -> list:
        """What a decoder's initializer takes: each buffer's descriptor, handed to the process
        as it is spawned (``init_worker``)."""
        return [_SpawnFd(fd) for fd in self.fds]

    def address(self, slot: int) -> tuple[int, tuple, str]:
        return slot, self.shape, self.dtype.str

    def view(self, slot: int, rows: int) -> np.ndarray:
        return np.ndarray((rows, *self.shape[1:]), self.dtype, buffer=self.maps[slot])

    def close(self) -> None:
        for mapping in self.maps:
            try:
                mapping.close()
            except BufferError:  # a view is still alive; the mapping goes with the process
                pass
        for fd in self.fds:
            os.close(fd)
        self.maps, self.fds = [], []

    @staticmethod
    def usable() -> bool:
        # anonymous memory files whose descriptors spawned decoders inherit: Linux
        return sys.platform.startswith("linux") and hasattr(os, "memfd_create")


class _SpawnFd:
    """A descriptor that goes to a process as multiprocessing spawns it (as a pipe of
    multiprocessing's own does): the child gets its own copy of the descriptor."""

    def __init__(self, fd: int):
        self.fd = fd

    def __reduce__(self):
        from multiprocessing import reduction

        return _spawned_fd, (reduction.DupFd(self.fd),)


def _spawned_fd(dup) -> int:
    return dup.detach()


_worker_state: dict = {}


def _attach(slot: int, shape: tuple, dtype: str) -> np.ndarray:
    """A shared batch buffer, mapped in this worker when it started (``init_worker``)."""
    return np.ndarray(shape, dtype, buffer=_worker_state["maps"][slot])


def _map_buffers(fds: Sequence[int]) -> list:
    import mmap

    maps = []
    for fd in fds:
        try:
            maps.append(mmap.mmap(fd, os.fstat(fd).st_size))
        finally:
            os.close(fd)
    return maps


def init_worker(preprocessing: Preprocessing, max_pixels: int, as_pixels: bool = False,
                buffers: Sequence[int] = ()) -> None:
    """``buffers``: the descriptors of the shared batch buffers (``SharedBatches.shared_fds``)."""
    # Ctrl-C reaches the whole process group: the main process decides when to stop (after the
    # current batch); workers just finish what they hold.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker_state.update(preprocessing=preprocessing, max_pixels=max_pixels, as_pixels=as_pixels,
                         maps=_map_buffers(buffers))
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


def decode_in_worker(paths: Sequence[str], slot: tuple | None = None) -> Decoded:
    out = _attach(*slot) if slot is not None else None
    decoded = decode_batch(paths, _worker_state["preprocessing"], _worker_state["max_pixels"], out,
                           _worker_state["as_pixels"])
    if out is not None:
        decoded.pixels = None  # already in shared memory; do not pickle it
    return decoded


def decode_isolated(paths: Sequence[str], preprocessing: Preprocessing, max_pixels: int,
                    as_pixels: bool = False) -> Decoded:
    ok, arrays, errors = [], [], {}
    context = multiprocessing.get_context("spawn")
    for position, path in enumerate(paths):
        with ProcessPoolExecutor(1, mp_context=context, initializer=init_worker,
                                 initargs=(preprocessing, max_pixels, as_pixels)) as single:
            try:
                one = single.submit(decode_in_worker, [path]).result()
            except BrokenProcessPool:
                errors[position] = ("ImageError", "the image decoder crashed on this file")
                continue
        if one.ok:
            ok.append(position)
            arrays.append(one.pixels[0])
        else:
            errors[position] = one.errors[0]
    crashed = sum(1 for kind, message in errors.values() if "decoder crashed" in message)
    if len(paths) > 1 and crashed == len(paths):
        raise DecoderError(f"the decoder crashed on every one of {len(paths)} images in a row: "
                           "the decoder processes themselves are broken, not these files")
    pixels = np.stack(arrays) if arrays else empty_batch(preprocessing.size, as_pixels)
    return Decoded(ok, pixels, errors)
