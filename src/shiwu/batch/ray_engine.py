"""The Ray engine: the same job as a Ray Data pipeline, on this machine or a whole cluster.

::

    paths ──▶ decode + preprocess ──▶ inference ──────────────────▶ rows ──▶ writer (driver)
    from_items  map_batches (tasks,     map_batches (actor pool,      JSON     the same writers,
                1 CPU each)             one model per actor)          strings  resume and output

Images are read by the Ray workers, so on a cluster every node must see them at the same path
(a shared or network file system). Rows come back to the driver, which writes them with the
same writers as the local engine: the output file, its schema, ``--resume`` and Ctrl-C behave
exactly the same. A row is about 300 bytes; a million of them is little traffic for the driver.
Decoded batches go through Ray's object store as cropped uint8 pixels when the actors' runtime
normalises in its graph (``ships_pixels``): a quarter of the bytes of float32 arrays.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import socket
import sys
import threading
import time
from typing import Callable, Iterator, Sequence

import numpy as np

from ..filenames import lossless, os_path, readable
from .decoders import batch_layout
from .local import Decoded, ModelOptions, decode_batch, rows_for
from .sources import InputError


PIXEL_RUNTIMES = ("onnxruntime", "openvino")  # normalise uint8 pixels inside their graphs
DECODE_TASK_MEMORY = 256 * 2**20  # bytes a decode task may need at its peak
# Fault tolerance, set explicitly rather than left to Ray Data's defaults (infinite): an
# inference actor that dies (OOM killer, a lost node, kill -9) is restarted this many times,
# and the batch it held is run again on a live actor; a decode task, likewise. The driver
# writes each image once even if a retried batch comes back twice.
ACTOR_MAX_RESTARTS = 4
ACTOR_MAX_TASK_RETRIES = 4
TASK_MAX_RETRIES = 4
CONNECT_TIMEOUT = 5.0  # seconds to reach a cluster's address before giving up
START_COMMAND = "ray start --head --port=6379"


class ClusterUnreachable(InputError):
    """``--address`` names no running Ray cluster."""


def _unreachable(address: str, why: str) -> ClusterUnreachable:
    return ClusterUnreachable(
        f"cannot reach a Ray cluster at {address} ({why}); start one with `{START_COMMAND}` "
        "on the head node (then --address HEAD:6379, or --address auto on that node), or leave "
        "out --address to run on a Ray started for this job")


def check_address(address: str | None, timeout: float = CONNECT_TIMEOUT) -> None:
    """Fail in ``timeout`` seconds with one clear line when ``address`` (HOST:PORT) does not
    answer, instead of Ray's ~20 s of retries, warnings and a traceback. ``auto`` and
    ``ray://`` addresses are left to Ray (``auto`` fails fast by itself)."""
    if not address or address == "auto" or "://" in address:
        return
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ClusterUnreachable(f"--address {address!r} is not HOST:PORT (or auto); a Ray head "
                                 f"started with `{START_COMMAND}` listens on HEAD:6379")
    began = time.monotonic()
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as sock:
            # Ray's GCS is a gRPC server: it answers the HTTP/2 connection preface with a
            # SETTINGS frame at once. Something that accepts the connection and stays silent
            # would otherwise keep Ray's client waiting far beyond its own timeout.
            sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            sock.settimeout(max(0.1, timeout - (time.monotonic() - began)))
            head = b""
            while len(head) < 9:
                chunk = sock.recv(9 - len(head))
                if not chunk:
                    break
                head += chunk
    except socket.timeout:
        raise _unreachable(address, f"no answer within {timeout:g} s") from None
    except OSError as exc:
        raise _unreachable(address, exc.strerror or str(exc)) from None
    if len(head) < 9 or head[3] != 0x04:
        raise _unreachable(address, "what answers there is not a Ray (gRPC) server")
    # Something listens there (or a proxy accepts every connection): ask it for a Ray cluster
    # id with a deadline, where ray.init would retry for ~20 s. Ray's client class is internal,
    # so if it has moved the check is skipped and ray.init decides.
    try:
        from ray._raylet import InnerGcsClient
    except ImportError:
        return
    standalone = getattr(InnerGcsClient, "standalone", None)
    if standalone is None:
        return
    try:
        with _silenced_stderr():  # its C++ retries log warnings; the outcome is told below
            standalone(address, None, int(timeout * 1000))
    except Exception as exc:  # noqa: BLE001 - Ray's RpcError and friends
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise _unreachable(address, f"no Ray cluster answers there: {first[:160]}") from None


@contextlib.contextmanager
def _silenced_stderr():
    sys.stderr.flush()
    try:
        saved = os.dup(2)
        null = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        yield
        return
    os.dup2(null, 2)
    os.close(null)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


# Ray Data creates its actors with their constructor (the whole map function) in the object
# store and, being fault tolerant, max_restarts > 0; Ray's C++ core then logs, on every run,
# an "E ... core_worker.cc ... max_restarts > 0 ..." line that reads like a failure. It is a
# caveat about lost objects, not an error, and cannot be avoided through Ray Data's API, so this
# one message is filtered out of stderr (C++ writes to file descriptor 2 directly).
_NOISE = (b"has constructor arguments in the object store and max_restarts > 0",)


@contextlib.contextmanager
def filtered_stderr(noise: tuple[bytes, ...] = _NOISE):
    """Pass everything written to file descriptor 2 through, except lines containing
    ``noise``. Text without a line ending (a progress bar's carriage returns) goes through at
    once unless it may be the start of a Ray log line (``[2026-...``)."""
    try:
        sys.stderr.flush()
        original = os.dup(2)
        read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        os.close(write_end)
    except OSError:  # no usable fd 2 (an embedding application): leave stderr alone
        yield
        return

    def pump() -> None:
        pending = b""
        while True:
            try:
                data = os.read(read_end, 65536)
            except OSError:
                data = b""
            if not data:
                break
            pending += data
            out = []
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                if not any(n in line for n in noise):
                    out.append(line + b"\n")
            if pending and not (pending.startswith(b"[") and len(pending) < 65536):
                out.append(pending)
                pending = b""
            if out:
                os.write(original, b"".join(out))
        if pending and not any(n in pending for n in noise):
            os.write(original, pending)

    thread = threading.Thread(target=pump, name="shiwu-stderr", daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(original, 2)  # closes the pipe's last write end: the pump drains and ends
        thread.join(timeout=5)
        os.close(original)
        os.close(read_end)


def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise InputError("the ray engine needs Ray Data: pip install 'shiwu[ray]'") from None
    return ray


def preprocessing_of(options: ModelOptions):
    """The model's preprocessing, without building the model (the driver needs no weights)."""
    from ..models.registry import get_model

    spec = get_model(options.model)
    return spec.preprocessing if options.size is None else spec.preprocessing.with_size(options.size)


def ships_pixels(options: ModelOptions) -> bool:
    """Whether decode tasks send uint8 pixels rather than float arrays: when the actors will run
    a runtime that normalises in its graph. Decided without loading the model (the driver needs
    no weights); an actor whose runtime cannot after all normalises them in numpy, same answer."""
    from ..config import resolve
    from ..models.registry import get_model

    spec = get_model(options.model)
    backend = resolve(spec.name, backend=options.backend, precision=options.precision).backend
    runtimes = PIXEL_RUNTIMES if backend == "auto" else (backend,)
    return any(runtime in PIXEL_RUNTIMES and spec.supports(runtime) for runtime in runtimes)


def _decode(batch: dict, preprocessing, max_pixels: int, as_pixels: bool = False) -> dict:
    # names travel through Arrow as lossless text (a name that is not UTF-8 would stop it)
    paths = [os_path(str(p)) for p in batch["image"]]
    decoded = decode_batch(paths, preprocessing, max_pixels, as_pixels=as_pixels)
    image, dtype = batch_layout(preprocessing.size, as_pixels)
    pixels = np.zeros((len(paths), *image), dtype)
    if decoded.ok:
        pixels[decoded.ok] = decoded.pixels
    errors = [decoded.errors.get(i, ("", "")) for i in range(len(paths))]
    return {"image": np.array([lossless(p) for p in paths], dtype=object), "pixels": pixels,
            "error_type": np.array([e[0] for e in errors], dtype=object),
            "error_message": np.array([readable(e[1]) for e in errors], dtype=object)}


class _Predictor:
    """One Ray actor: one model, loaded once, fed preprocessed batches."""

    def __init__(self, options: ModelOptions, topk: int, batch_size: int, embed: bool = False):
        import ray

        self.recognizer = options.recognizer(batch_size)
        self.topk = topk
        self.embed = embed
        # a restarted actor says so with its first batch, so the summary can tell the user
        context = ray.get_runtime_context()
        self.restarted = bool(context.was_current_actor_reconstructed)
        self.pid = os.getpid()

    def __call__(self, batch: dict) -> dict:
        paths = [os_path(str(p)) for p in batch["image"]]
        kinds, messages = list(batch["error_type"]), list(batch["error_message"])
        ok = [i for i, kind in enumerate(kinds) if not kind]
        errors = {i: (str(kinds[i]), str(messages[i])) for i, kind in enumerate(kinds) if kind}
        pixels = np.ascontiguousarray(np.asarray(batch["pixels"])[ok])  # uint8 pixels or float32
        rows = rows_for(paths, Decoded(ok, pixels, errors), self.recognizer, self.topk, self.embed)
        out = {}
        if self.embed:  # a float32 column beside the JSON: no vector goes through text
            vectors = [r.pop("embedding", None) for r in rows]
            width = next((len(v) for v in vectors if v is not None), 0)
            out["embedding"] = np.stack([v if v is not None else np.zeros(width, np.float32) for v in vectors])
            out["has_embedding"] = np.array([v is not None for v in vectors])
        # ASCII JSON: a name that is not UTF-8 comes back to the driver as the same str
        out["row"] = np.array([json.dumps(r) for r in rows], dtype=object)
        out["actor_pid"] = np.full(len(rows), self.pid, dtype=np.int64)
        out["actor_restarted"] = np.full(len(rows), self.restarted)
        return out


def plan(total_cpus: float, threads: int | None, actors: int | None) -> tuple[int, int]:
    """(threads per actor, actors): a quarter of the CPUs (at least one) stays for decoding."""
    total = max(1, int(total_cpus))
    threads = threads or (1 if total <= 4 else 2)
    threads = min(threads, max(1, total - 1)) if total > 1 else 1
    if actors is None:
        decode = max(1, total // 4)
        actors = max(1, (total - decode) // threads)
    return threads, actors


def run_ray(paths: Sequence[str], options: ModelOptions, *, topk: int = 5, batch_size: int = 32,
            workers: int | None = None, address: str | None = None, actors: int | None = None,
            should_stop: Callable[[], bool] = lambda: False,
            num_cpus: int | None = None, embed: bool = False,
            stats: dict | None = None) -> Iterator[list[dict]]:
    """Yield rows batch by batch (in completion order) until done or ``should_stop()``.

    ``stats`` (a dict) gets ``actor_restarts``: inference actors that crashed and came back.
    """
    ray = _import_ray()
    preprocessing = preprocessing_of(options)  # unknown model: fail before starting Ray
    stats = {} if stats is None else stats
    started_here = not ray.is_initialized()
    # Ray prints its workers' and raylet's messages ("(raylet) Task ... failed, retrying") to
    # the driver's stdout, where `--json` puts the summary: send them to stderr with the rest
    # of the diagnostics.
    with filtered_stderr(), contextlib.redirect_stdout(sys.stderr):
        if started_here:
            check_address(address)
            if address is None and num_cpus is None and os.environ.get("SHIWU_RAY_NUM_CPUS"):
                num_cpus = int(os.environ["SHIWU_RAY_NUM_CPUS"])
            # Ray's start-up chatter would bury the progress bar; real failures still raise.
            init = dict(address=address, include_dashboard=False, logging_level=logging.ERROR)
            if address is None and num_cpus is not None:
                init["num_cpus"] = num_cpus
            try:
                ray.init(**init)
            except (ConnectionError, TimeoutError, RuntimeError) as exc:
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise _unreachable(address or "a new local Ray", first[:200]) from None
        yield from _run_started(ray, paths, options, preprocessing, topk=topk,
                                batch_size=batch_size, workers=workers, actors=actors,
                                should_stop=should_stop, embed=embed, stats=stats,
                                started_here=started_here)


def _run_started(ray, paths, options, preprocessing, *, topk, batch_size, workers, actors,
                 should_stop, embed, stats, started_here) -> Iterator[list[dict]]:
    restarted: set[int] = set()
    try:
        for name in ("ray", "ray.data"):
            logging.getLogger(name).setLevel(logging.ERROR)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # shiwu draws its own
        if hasattr(context, "print_on_execution_start"):
            context.print_on_execution_start = False
        threads, actors = plan(ray.cluster_resources().get("CPU", 1), options.threads, actors)
        actor_options = dataclasses.replace(options, threads=threads)

        dataset = ray.data.from_items([{"image": lossless(p)} for p in paths])
        # Decoding runs as tasks. Asking for memory (a decoded 12-megapixel PNG is 36 MB) also
        # keeps Ray Data from fusing this stage into the inference actors, where decoding would
        # stall the model instead of overlapping with it.
        decode_compute = (ray.data.TaskPoolStrategy(size=workers)
                          if workers and workers > 0 and hasattr(ray.data, "TaskPoolStrategy") else None)
        dataset = dataset.map_batches(
            _decode, batch_size=batch_size, batch_format="numpy", num_cpus=1,
            memory=DECODE_TASK_MEMORY, compute=decode_compute, max_retries=TASK_MAX_RETRIES,
            fn_kwargs={"preprocessing": preprocessing, "max_pixels": options.max_pixels,
                       "as_pixels": ships_pixels(options)})
        dataset = dataset.map_batches(
            _Predictor, batch_size=batch_size, batch_format="numpy", num_cpus=threads,
            compute=ray.data.ActorPoolStrategy(size=actors),
            max_restarts=ACTOR_MAX_RESTARTS, max_task_retries=ACTOR_MAX_TASK_RETRIES,
            fn_constructor_kwargs={"options": actor_options, "topk": topk, "batch_size": batch_size,
                                   "embed": embed})
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            for pid, again in zip(batch["actor_pid"], batch["actor_restarted"]):
                if again:
                    restarted.add(int(pid))
            stats["actor_restarts"] = len(restarted)
            rows = [json.loads(text) for text in batch["row"]]
            if embed:
                for row, vector, has in zip(rows, batch["embedding"], batch["has_embedding"]):
                    if has:
                        row["embedding"] = np.asarray(vector, np.float32)
            yield rows
            if should_stop():
                return
    finally:
        if started_here:
            ray.shutdown()
