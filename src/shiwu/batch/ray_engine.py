"""The Ray engine: the same job as a Ray Data pipeline, on this machine or a whole cluster.

::

    paths ──▶ decode + preprocess ──▶ inference ──────────────────▶ rows ──▶ writer (driver)
    from_items  map_batches (tasks,     map_batches (actor pool,      JSON     the same writers,
                1 CPU each)             one model per actor)          strings  resume and output

Images are read by the Ray workers, so on a cluster every node must see them at the same path
(a shared or network file system). Rows come back to the driver, which writes them with the
same writers as the local engine: the output file, its schema, ``--resume`` and Ctrl-C behave
exactly the same. A row is about 300 bytes; a million of them is little traffic for the driver.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Callable, Iterator, Sequence

import numpy as np

from .local import Decoded, ModelOptions, decode_batch, rows_for
from .sources import InputError


DECODE_TASK_MEMORY = 256 * 2**20  # bytes a decode task may need at its peak


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


def _decode(batch: dict, preprocessing, max_pixels: int) -> dict:
    paths = [str(p) for p in batch["image"]]
    decoded = decode_batch(paths, preprocessing, max_pixels)
    size = preprocessing.size
    pixels = np.zeros((len(paths), 3, size, size), np.float32)
    if decoded.ok:
        pixels[decoded.ok] = decoded.pixels
    errors = [decoded.errors.get(i, ("", "")) for i in range(len(paths))]
    return {"image": np.array(paths, dtype=object), "pixels": pixels,
            "error_type": np.array([e[0] for e in errors], dtype=object),
            "error_message": np.array([e[1] for e in errors], dtype=object)}


class _Predictor:
    """One Ray actor: one model, loaded once, fed preprocessed batches."""

    def __init__(self, options: ModelOptions, topk: int, batch_size: int, embed: bool = False):
        self.recognizer = options.recognizer(batch_size)
        self.topk = topk
        self.embed = embed

    def __call__(self, batch: dict) -> dict:
        paths = [str(p) for p in batch["image"]]
        kinds, messages = list(batch["error_type"]), list(batch["error_message"])
        ok = [i for i, kind in enumerate(kinds) if not kind]
        errors = {i: (str(kinds[i]), str(messages[i])) for i, kind in enumerate(kinds) if kind}
        pixels = np.ascontiguousarray(np.asarray(batch["pixels"], dtype=np.float32)[ok])
        rows = rows_for(paths, Decoded(ok, pixels, errors), self.recognizer, self.topk, self.embed)
        out = {}
        if self.embed:  # a float32 column beside the JSON: no vector goes through text
            vectors = [r.pop("embedding", None) for r in rows]
            width = next((len(v) for v in vectors if v is not None), 0)
            out["embedding"] = np.stack([v if v is not None else np.zeros(width, np.float32) for v in vectors])
            out["has_embedding"] = np.array([v is not None for v in vectors])
        out["row"] = np.array([json.dumps(r, ensure_ascii=False) for r in rows], dtype=object)
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
            num_cpus: int | None = None, embed: bool = False) -> Iterator[list[dict]]:
    """Yield rows batch by batch (in completion order) until done or ``should_stop()``."""
    ray = _import_ray()
    preprocessing = preprocessing_of(options)  # unknown model: fail before starting Ray
    started_here = not ray.is_initialized()
    if started_here:
        if address is None and num_cpus is None and os.environ.get("SHIWU_RAY_NUM_CPUS"):
            num_cpus = int(os.environ["SHIWU_RAY_NUM_CPUS"])
        # Ray's start-up chatter would bury the progress bar; real failures still raise.
        init = dict(address=address, include_dashboard=False, logging_level=logging.ERROR)
        if address is None and num_cpus is not None:
            init["num_cpus"] = num_cpus
        ray.init(**init)
    try:
        for name in ("ray", "ray.data"):
            logging.getLogger(name).setLevel(logging.ERROR)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # shiwu draws its own
        if hasattr(context, "print_on_execution_start"):
            context.print_on_execution_start = False
        threads, actors = plan(ray.cluster_resources().get("CPU", 1), options.threads, actors)
        actor_options = dataclasses.replace(options, threads=threads)

        dataset = ray.data.from_items([{"image": p} for p in paths])
        # Decoding runs as tasks. Asking for memory (a decoded 12-megapixel PNG is 36 MB) also
        # keeps Ray Data from fusing this stage into the inference actors, where decoding would
        # stall the model instead of overlapping with it.
        decode_compute = (ray.data.TaskPoolStrategy(size=workers)
                          if workers and workers > 0 and hasattr(ray.data, "TaskPoolStrategy") else None)
        dataset = dataset.map_batches(
            _decode, batch_size=batch_size, batch_format="numpy", num_cpus=1,
            memory=DECODE_TASK_MEMORY, compute=decode_compute,
            fn_kwargs={"preprocessing": preprocessing, "max_pixels": options.max_pixels})
        dataset = dataset.map_batches(
            _Predictor, batch_size=batch_size, batch_format="numpy", num_cpus=threads,
            compute=ray.data.ActorPoolStrategy(size=actors),
            fn_constructor_kwargs={"options": actor_options, "topk": topk, "batch_size": batch_size,
                                   "embed": embed})
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
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
