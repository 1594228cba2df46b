"""``shiwu index``, ``search`` and ``dedupe``: photos to embeddings to an index, and back.

Building goes through the batch pipeline (the same decoder processes, engines, progress bar and
per-image errors as ``shiwu batch``); each batch's rows and vectors are one transaction of the
index (shiwu.index), so a run killed at any moment leaves whole batches, and running the same
command again embeds only what is missing or changed (``rows_needing``). The model that built an
index is recorded in its manifest, so ``search`` and ``dedupe --index`` rebuild the same one.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np

from .display import printable
from .filenames import readable, readable_values
from .images import DEFAULT_MAX_PIXELS
from .models.spec import ModelNotFound, ModelRef

log = logging.getLogger(__name__)


class IndexingError(RuntimeError):
    """An index cannot be built or searched as asked; the message says what to do."""


class IndexingInterrupted(Exception):
    """The photos were not all embedded (Ctrl-C, SIGTERM): an answer now would be about part of
    them only, so there is none."""


def preprocessing_identity(preprocessing) -> dict:
    """Everything in ``preprocessing`` that changes a vector, as the manifest records it."""
    return {"size": int(preprocessing.size), "resize": preprocessing.resize,
            "crop_ratio": float(preprocessing.crop_ratio),
            "mean": [float(v) for v in preprocessing.mean], "std": [float(v) for v in preprocessing.std],
            "interpolation": int(preprocessing.resample), "full_decode": bool(preprocessing.full_decode)}


def follow_index(manifest, location: str, *, backend: str | None, precision: str | None):
    """The index's runtime and precision where the person gave none (index.made_with), saying
    so in one line when this CPU would not choose them by itself."""
    from .index.made_with import follow

    made = follow(manifest, location, backend=backend, precision=precision)
    if made.note:
        log.info("%s", made.note)
    return made


def _cannot_follow(manifest, location: str, made, exc: Exception) -> Exception:
    """A runtime that refused to build the index's setting here: one line naming the index when
    the setting was the index's own, else the runtime's own message."""
    from .index.made_with import cannot_follow

    if not manifest.precision:
        return exc
    return cannot_follow(location, f"{made.backend or ''} {made.precision}".strip(), str(exc))


def _stored_ref(ref: ModelRef) -> dict:
    """What the manifest keeps to rebuild the model: never trust (see index.manifest)."""
    return {k: v for k, v in ref.to_dict().items() if k != "trust_model_code"}


@dataclass
class IndexSummary:
    location: str
    total: int = 0        # images named by the inputs (each real file once)
    up_to_date: int = 0   # already in the index, unchanged
    done: int = 0         # rows written by this run
    failed: int = 0       # of those, images that could not be embedded
    pruned: int = 0       # rows of vanished files dropped (--prune)
    rows: int = 0         # rows in the index afterwards
    seconds: float = 0.0
    interrupted: bool = False
    model: str = ""
    backend: str = ""
    precision: str = ""
    failures: list = field(default_factory=list, repr=False)

    @property
    def images_per_second(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        out = asdict(self)
        out["failures"] = [{"image": i, "error": m} for i, m in self.failures]
        out["images_per_second"] = round(self.images_per_second, 2)
        return out

    def format(self) -> str:
        ran = f"; {self.model} on {self.backend} {self.precision}" if self.done else ""
        # done counts every photo read this run, failed ones included (JSON: done, failed)
        lines = [f"{self.location}: {self.done - self.failed} embedded, {self.failed} failed, {self.up_to_date} "
                 f"already there, {self.pruned} pruned; {self.rows} rows; {self.seconds:.1f} s "
                 f"({self.images_per_second:.1f} images/s){ran}"]
        if self.interrupted:
            lines.append("interrupted: run the same command again to add the rest")
        return "\n".join(lines)


def _open_existing(location: str, spec):
    from .index import index_exists, open_index

    if not index_exists(location):
        return None
    return open_index(location, model=spec.key, weights_hash=spec.fingerprint())


def build_index(inputs: Sequence[str], location: str, *, recursive: bool = False, prune: bool = False,
                model=None, backend: str | None = None, precision: str | None = None,
                threads: int | None = None, size: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
                batch_size: int = 32, workers: int | None = None, streams: int | None = None,
                engine: str = "local", address: str | None = None, actors: int | None = None,
                calibration: str | None = None, progress: bool = True, stdin=None) -> IndexSummary:
    """Embed every image named by ``inputs`` into the index at ``location`` (a folder, or a
    Milvus store ``milvus://HOST:PORT/COLLECTION`` / ``PATH.db``)."""
    from tqdm import tqdm

    from .backends import BackendUnavailable
    from .batch.stopping import StopFlag
    from .batch.local import ModelOptions
    from .batch.sources import collect_images, no_images_found
    from .config import resolve
    from .index import IndexRow, Manifest, create_or_join
    from .models.registry import get_model

    started = time.perf_counter()
    location = os.fspath(location)
    ref = ModelRef.of(model)
    spec = get_model(ref)
    paths = collect_images(inputs, recursive=recursive, stdin=stdin)
    if not paths:
        raise IndexingError(no_images_found(inputs, recursive=recursive))
    index = _open_existing(location, spec)  # another model's index: refused before any work
    made = None
    if index is not None:
        # an existing index is added to as it was built: its size, runtime and precision win
        # over tuned settings and this CPU's own choice; ones given explicitly must match
        size = size or index.manifest.preprocessing.get("size")
        try:
            made = follow_index(index.manifest, location, backend=backend, precision=precision)
        except Exception:
            index.close()
            raise
        backend, precision = made.backend, made.precision
    settings = resolve(spec.key, backend=backend, precision=precision, size=size)
    size = settings.size
    identity = preprocessing_identity(spec.preprocessing if size is None
                                      else spec.preprocessing.with_size(size))
    if index is not None:
        try:  # vectors made another way (size, preprocessing, precision) are not mixed in
            index.manifest.check_compatible(location, preprocessing=identity, precision=settings.precision)
        except Exception:
            index.close()
            raise
    summary = IndexSummary(location)
    todo = index.rows_needing(paths) if index is not None else _distinct_files(paths)
    summary.total = len(_distinct_files(paths))
    summary.up_to_date = summary.total - len(todo)
    if prune and index is not None:
        summary.pruned = index.prune()
    options = ModelOptions(ref, backend, precision, threads, size, max_pixels, calibration)
    say = lambda message: tqdm.write(message, file=sys.stderr)  # noqa: E731
    stop = StopFlag(say)
    bar = tqdm(total=len(todo), unit="img", desc="shiwu index", file=sys.stderr, disable=not progress,
               dynamic_ncols=True, mininterval=0.5 if sys.stderr.isatty() else 30)
    pending: list[tuple] = []  # error rows seen before the first vector told the dimension

    def manifest(dimension: int, made_at: tuple[str, str]) -> Manifest:  # (runtime, precision)
        from .backends.runtimes import INT8_RECIPES

        made_in = made_at[1] or settings.precision
        return Manifest(model=spec.key, dimension=dimension, weights_hash=spec.fingerprint(),
                        model_ref=_stored_ref(ref), preprocessing=identity, precision=made_in, backend=made_at[0],
                        int8_recipe=INT8_RECIPES.get(made_at[0], "") if made_in == "int8" else "")

    def store(rows: list[dict]) -> None:
        nonlocal index
        records, vectors = [], []
        for row in rows:
            error = row.get("error")
            top = row["predictions"][0] if row.get("predictions") else None
            try:
                record = IndexRow.for_file(row["image"], model=spec.key, label=top and top["label"],
                                           score=top and top["score"], error_type=error and error["type"],
                                           error_message=error and error["message"])
            except OSError as exc:
                # no file to keep a row for (a dangling or looping link, or one that vanished
                # while we worked): a failure like any other, counted and named as batch does
                summary.failed += 1
                if len(summary.failures) < 10:
                    path, message = readable(row["image"]), readable(error["message"] if error else
                                                                     exc.strerror or str(exc))
                    summary.failures.append((path, message))
                    say(f"shiwu: {printable(path)}: {printable(message)}")
                continue
            if error:
                summary.failed += 1
                if len(summary.failures) < 10:
                    summary.failures.append((record.path, record.error_message))
                    say(f"shiwu: {printable(record.path)}: {printable(record.error_message)}")
            records.append(record)
            vectors.append(row.get("embedding"))
        if index is None:
            dimension = next((len(v) for v in vectors if v is not None), None)
            if dimension is None:
                pending.append((records, vectors))
                return
            index = create_or_join(location, manifest(dimension, (rows[0]["backend"], rows[0]["precision"])
                                                      if rows else ("", "")))
            for earlier in pending:
                index.upsert(*earlier)
            pending.clear()
        index.upsert(records, vectors)

    try:
        if todo:
            stop.install()
            if engine == "ray":
                from .batch.ray_engine import run_ray
                batches = run_ray(todo, options, topk=1, batch_size=batch_size, workers=workers,
                                  address=address, actors=actors, should_stop=stop, embed=True)
            else:
                from .batch.local import run_local
                batches = run_local(todo, options, topk=1, batch_size=batch_size, workers=workers,
                                    streams=streams, should_stop=stop, embed=True)
            try:
                for rows in batches:
                    store(rows)
                    if rows:
                        summary.model = rows[0]["model"]
                        summary.backend, summary.precision = rows[0]["backend"], rows[0]["precision"]
                    summary.done += len(rows)
                    bar.update(len(rows))
                    if stop():
                        break
            finally:
                batches.close()
            summary.interrupted = stop() and summary.done < len(todo)
    except KeyboardInterrupt:
        summary.interrupted = True
    except BackendUnavailable as exc:  # the index's own setting cannot run here: say which
        raise (_cannot_follow(index.manifest, location, made, exc) if made is not None else exc) from None
    finally:
        stop.restore()
        bar.close()
        if index is None and pending:  # every image failed: the index still records them
            from .recognizer import Recognizer

            recognizer = Recognizer(ref, backend=backend, precision=precision, size=size)
            probe = np.zeros((1, 3, recognizer.preprocessing.size, recognizer.preprocessing.size), np.float32)
            dimension = recognizer.logits_and_embeddings(probe)[1].shape[1]
            index = create_or_join(location, manifest(dimension, (recognizer.backend.name,
                                                                  recognizer.backend.precision)))
            for earlier in pending:
                index.upsert(*earlier)
        if index is not None:
            index.flush()
            summary.rows = len(index)
            index.close()
        summary.model = summary.model or spec.name
        summary.seconds = time.perf_counter() - started
    return summary


def _distinct_files(paths: Sequence[str]) -> list[str]:
    from .index import real_path

    seen, out = set(), []
    for path in paths:
        real = real_path(path)
        if real not in seen:
            seen.add(real)
            out.append(path)
    return out


# ----------------------------------------------------------------------------- searching

def _match(score: float, row) -> dict:
    # row.path is readable text (shiwu.filenames): every match serialises as JSON
    return {"image": row.path, "score": round(float(score), 6), "label": row.label}


def index_model(index, *, trust_model_code: bool = False):
    """(ModelRef, ModelSpec) of the model that built ``index``, as it resolves here; raises
    IndexingError when the name now means another model. Trust to unpickle the model comes
    from the caller (``--trust-model-code``), never from the index's files."""
    import dataclasses

    from .models.registry import get_model

    ref = ModelRef.of(index.manifest.model_ref or index.manifest.model)
    ref = dataclasses.replace(ref, trust_model_code=bool(trust_model_code))
    spec = get_model(ref)
    if spec.key != index.manifest.model:
        raise IndexingError(f"index {index.location} was built with {index.manifest.model}, which "
                            f"resolves to {spec.key} here")
    return ref, spec


def text_queries(spec, texts: Sequence[str], location: str) -> np.ndarray:
    """(len(texts), D) text embeddings to search an index of ``spec``'s image embeddings with;
    IndexingError unless the model has a text tower (Chinese-CLIP)."""
    if spec.text_encoder is None:
        raise IndexingError(f"--text needs an index built with a Chinese-CLIP model (it has a text "
                            f"tower); {location} was built with {spec.name}, which has none")
    return np.asarray(spec.text_encoder(list(texts)), dtype=np.float32)


def search_vectors(index, vectors: np.ndarray, topk: int) -> list[list[dict]]:
    """Per query vector, its matches ``[{"image", "score", "label"}]``, best first."""
    return [[_match(s, r) for s, r in matches] for matches in index.search(vectors, topk)]


def search(location: str, *, images: Sequence[str] = (), texts: Sequence[str] = (), topk: int = 10,
           backend: str | None = None, precision: str | None = None, threads: int | None = None,
           trust_model_code: bool = False) -> list[dict]:
    """Per query (each image, then each text), ``{"image" | "text", "matches": [{"image",
    "score", "label"}], "error"}``: the index's rows closest to it, best first.

    Query photos are embedded as the index's were: at its input size and preprocessing, with
    its runtime and precision (index.made_with) unless ``backend`` / ``precision`` say otherwise
    (then refused if that differs)."""
    from .index import open_index

    index = open_index(location)
    try:
        ref, spec = index_model(index, trust_model_code=trust_model_code)
        results = []
        if images:
            from .backends import BackendUnavailable
            from .recognizer import Recognizer

            built = index.manifest
            size = built.preprocessing.get("size") if built.preprocessing else None
            made = follow_index(built, location, backend=backend, precision=precision)
            try:
                recognizer = Recognizer(ref, backend=made.backend, precision=made.precision, threads=threads,
                                        size=size)
            except BackendUnavailable as exc:
                raise _cannot_follow(built, location, made, exc) from None
            built.check_compatible(location, precision=recognizer.backend.precision,
                                   preprocessing=preprocessing_identity(recognizer.preprocessing))
            for result in recognizer.iter_recognize(images, topk=1, embed=True):
                if result.error is not None:
                    results.append({"image": readable(result.image), "matches": [],
                                    "error": readable_values(result.to_dict()["error"])})
                    continue
                results.append({"image": readable(result.image),
                                "matches": search_vectors(index, result.embedding, topk)[0], "error": None})
        if texts:
            vectors = text_queries(spec, texts, location)
            for text, matches in zip(texts, search_vectors(index, vectors, topk)):
                results.append({"text": text, "matches": matches, "error": None})
        return results
    finally:
        index.close()


def duplicate_groups(*, location: str | None = None, inputs: Sequence[str] = (), threshold: float | None = None,
                     tier: str | None = None, unreadable=None, **build) -> list:
    """Near-duplicate groups (lists of IndexRow, the largest file first) of an existing index,
    or of ``inputs``, embedded into a temporary index first; with ``tier``, DuplicateGroups
    (index.dedupe.tiered_duplicate_groups, which passes ``unreadable`` each row whose file it
    could not read). IndexingInterrupted when Ctrl-C / SIGTERM stopped the embedding part-way:
    groups of part of the photos would be a wrong answer."""
    from functools import partial

    from .cache import scratch
    from .index import DEFAULT_DUPLICATE_THRESHOLD, near_duplicate_groups, open_index
    from .index.dedupe import tiered_duplicate_groups

    find = near_duplicate_groups if tier is None else \
        partial(tiered_duplicate_groups, tier=tier, unreadable=unreadable)

    threshold = DEFAULT_DUPLICATE_THRESHOLD if threshold is None else threshold
    if not 0.0 <= threshold <= 1.0:  # NaN too: every comparison with it is False (0 groups)
        raise IndexingError(f"--threshold must be a cosine similarity between 0 and 1, not {threshold}")
    if location is not None:
        with open_index(location) as index:
            return find(index, threshold)
    # the temporary index lives in the cache's scratch area: kill -9 cannot leave it behind for
    # good (the next run removes it), where the system's /tmp would keep it until a reboot
    with scratch("dedupe") as folder:
        where = os.path.join(folder, "index")
        if build_index(inputs, where, **build).interrupted:
            raise IndexingInterrupted("interrupted before every photo was read")
        if not os.path.exists(os.path.join(where, "manifest.json")):
            raise ModelNotFound("nothing could be embedded")
        with open_index(where) as index:
            return find(index, threshold)
