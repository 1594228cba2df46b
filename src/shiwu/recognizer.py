"""Recognizer: a model, a backend and its pre/post-processing, behind one small API."""

from __future__ import annotations

import logging
import numbers
import os
from dataclasses import dataclass, field
from functools import cached_property
from typing import Iterable, Iterator, Sequence

import numpy as np

from .backends import BackendUnavailable, create_backend
from .config import resolve as resolve_settings
from .cpu import max_threads
from .images import DEFAULT_MAX_PIXELS, ImageError, ImageSource, describe, load_image
from .models.registry import ModelRef, get_model
from .postprocess import Prediction, top_k

log = logging.getLogger(__name__)

QUANTIZING_BACKENDS = ("auto", "openvino", "onnxruntime")


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float32), so that a dot product is the cosine similarity."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, np.float32(1e-12))


@dataclass
class Result:
    """The outcome for one input: predictions, or an error that says why there are none."""

    image: str
    predictions: list[Prediction] = field(default_factory=list)
    error: Exception | None = None
    model: str = ""
    backend: str = ""
    precision: str = ""
    embedding: np.ndarray | None = field(default=None, repr=False)  # (D,) L2-normalised, when asked

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict:
        error = None
        if self.error is not None:
            message = self.error.reason if isinstance(self.error, ImageError) else str(self.error)
            error = {"type": type(self.error).__name__, "message": message}
        return {
            "image": self.image,
            "predictions": [p.to_dict() for p in self.predictions],
            "model": self.model,
            "backend": self.backend,
            "precision": self.precision,
            "error": error,
        }


class Recognizer:
    """Recognise what is in photos and name it in Chinese.

    >>> r = Recognizer()                      # embedded default model
    >>> r.predict("猫.jpg", topk=5)[0].label    # doctest: +SKIP
    '虎斑猫'
    """

    def __init__(self, model: str | ModelRef | None = None, *, backend: str | None = None,
                 precision: str | None = None, threads: int | None = None, size: int | None = None,
                 batch_size: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
                 calibration: str | None = None, gallery=None, gallery_mode: str = "merge",
                 min_similarity: float | None = None, **model_options):
        """``model``: a name, a ModelScope id or folder, the path of your own model file or
        folder, or a ModelRef. ``model_options`` are ModelRef's fields for your own model:
        ``labels``, ``resize`` ("squash" or "crop"), ``mean``, ``std`` (0-1 scale),
        ``interpolation``, ``trust_model_code`` (allow unpickling a whole module), ``prompt``.

        ``gallery``: a folder of example photos, one sub-folder per class (see shiwu.gallery);
        ``gallery_mode`` "merge" puts its classes whose closest example is at least
        ``min_similarity`` close before the model's labels, "replace" uses the gallery alone.

        Options left as None come from ``shiwu tune``'s settings for this model if there are
        any (see shiwu.config), else the defaults: auto, auto (the fastest precision that passes
        the accuracy policy, backends.policy), physical cores, the model's
        size, batches of 8. ``self.settings`` says which values were used and why."""
        ref = ModelRef.of(model)
        if model_options:
            ref = ModelRef(**{**ref.to_dict(), **model_options})
        self.spec = get_model(ref)
        self.labels = self.spec.labels()
        if threads is not None and not 1 <= threads <= max_threads():
            raise BackendUnavailable(f"threads={threads}: give 1 to {max_threads()} here (4 per CPU)")
        given = dict(backend=backend, precision=precision, threads=threads, size=size,
                     batch_size=batch_size)
        self.settings = resolve_settings(self.spec.key, **given)
        try:
            self._build(self.settings, calibration)
        except BackendUnavailable as exc:
            if not self.settings.uses_tuned:
                raise
            # tuned on another machine, or a runtime was uninstalled since: say so, run anyway
            log.warning(f"the tuned settings for {self.spec.name} cannot run here "
                        f"({exc}); using the defaults. Run `shiwu tune` again.")
            self.settings = resolve_settings(self.spec.key, **given, use_tuned=False)
            self._build(self.settings, calibration)
        self.batch_size = max(1, int(self.settings.batch_size))
        self.max_pixels = max_pixels
        self.gallery = None
        if gallery is not None:
            self.use_gallery(gallery, mode=gallery_mode, min_similarity=min_similarity)

    def use_gallery(self, gallery, *, mode: str = "merge", min_similarity: float | None = None) -> None:
        """Name photos by example classes from now on (a folder, or a loaded Gallery)."""
        from .gallery import DEFAULT_MIN_SIMILARITY, MODES, Gallery, GalleryError, load_gallery

        if mode not in MODES:
            raise GalleryError(f"gallery mode must be one of {', '.join(MODES)}, not {mode!r}")
        if min_similarity is not None and not -1.0 <= min_similarity <= 1.0:  # a cosine: 2 matched nothing
            raise GalleryError(f"min_similarity is a cosine similarity from -1 to 1, not {min_similarity!r}")
        self.backend.require_embedding()
        self.gallery = gallery if isinstance(gallery, Gallery) else load_gallery(gallery, self)
        self.gallery_mode = mode
        self.min_similarity = DEFAULT_MIN_SIMILARITY if min_similarity is None else min_similarity

    def _build(self, settings, calibration: str | None) -> None:
        size = settings.size
        self.preprocessing = (self.spec.preprocessing if size is None
                              else self.spec.preprocessing.with_size(size))
        # int8 is calibrated on real photos: shiwu's bundled ones, or the folder given here.
        # Only the runtimes that quantize take the option; the others refuse int8 themselves
        # (BackendUnavailable, with the reason) instead of failing on an unknown argument.
        options = ({"calibration": calibration}
                   if settings.precision in ("int8", "auto") and settings.backend in QUANTIZING_BACKENDS
                   else {})
        self.backend = create_backend(settings.backend, self.spec, size=self.preprocessing.size,
                                      precision=settings.precision, threads=settings.threads,
                                      **options)

    @property
    def model_name(self) -> str:
        return self.spec.name

    def load(self, source: ImageSource):
        """Decode one source to RGB, as small as this model allows (raises ImageError)."""
        return load_image(source, min_size=self.preprocessing.decode_min_size,
                          max_pixels=self.max_pixels)

    def takes_pixels(self) -> bool:
        """Whether this runtime normalises cropped uint8 pixels (``preprocessing.pixels``) inside
        its graph: then feed it those, a quarter of the bytes of the float arrays
        (``preprocessing(image)``). Builds that graph now, so the first batch does not wait."""
        return bool(getattr(self.backend, "pixels_in", False)) and self.backend.pixel_front()

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """Raw (N, classes) logits for a preprocessed float32 (N, 3, size, size) batch."""
        return self.backend.run(batch)

    def logits_and_embeddings(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, classes) logits and (N, D) L2-normalised embeddings from one inference."""
        logits, features = self.backend.run_with_embedding(batch)
        return logits, l2_normalize(features)

    def embed(self, sources: Sequence[ImageSource]) -> np.ndarray:
        """(N, D) L2-normalised float32 embeddings, one row per source in order: the pooled
        features the classifier reads. Raises on the first bad image; ``recognize(...,
        embed=True)`` gives per-image errors instead."""
        results = self.recognize(sources, topk=1, embed=True)
        for result in results:
            if result.error is not None:
                raise result.error
        if not results:  # still (0, D): callers stack and concatenate these
            return np.zeros((0, self.embedding_dimension), np.float32)
        return np.stack([r.embedding for r in results])

    @cached_property
    def embedding_dimension(self) -> int:
        """D of ``embed``'s (N, D) rows: measured once on a blank input (raises, saying why,
        for a model without embeddings)."""
        self.backend.require_embedding()
        size = self.preprocessing.size
        probe = np.zeros((1, 3, size, size), np.float32)
        return int(self.logits_and_embeddings(probe)[1].shape[1])

    def predict_arrays(self, batch: np.ndarray, topk: int = 5) -> list[list[Prediction]]:
        """Top-k predictions for an already preprocessed batch (see ``self.preprocessing``),
        the gallery's classes merged in when there is one."""
        return self._answer(batch, topk, embed=False)[0]

    def predict_and_embed_arrays(self, batch: np.ndarray,
                                 topk: int = 5) -> tuple[list[list[Prediction]], np.ndarray]:
        """``predict_arrays`` and the (N, D) L2-normalised embeddings, from one inference."""
        return self._answer(batch, topk, embed=True)

    def _answer(self, batch: np.ndarray, topk: int, embed: bool):
        from .gallery import merge

        # Read once: a server swaps in a grown gallery while batches run on another thread.
        gallery = self.gallery
        want_embedding = embed or gallery is not None
        if batch.dtype == np.uint8 and not getattr(self.backend, "pixels_in", False):
            batch = self.preprocessing.normalise(batch)  # pixels for a runtime that wants floats
        if batch.dtype == np.uint8:  # cropped pixels, normalised inside the graph
            logits, features = self.backend.run_pixels(batch, want_embedding)
            embeddings = l2_normalize(features) if want_embedding else None
        elif want_embedding:
            logits, embeddings = self.logits_and_embeddings(batch)
        else:
            logits, embeddings = self.logits(batch), None
        predictions = top_k(logits, self.labels, topk)
        if gallery is not None:
            taught = gallery.classify(embeddings)
            predictions = [merge(p, t, mode=self.gallery_mode, min_similarity=self.min_similarity, topk=topk)
                           for p, t in zip(predictions, taught)]
        return predictions, embeddings

    def predict(self, source: ImageSource, topk: int = 5) -> list[Prediction]:
        """Top-``topk`` predictions for one image, best first. Raises ImageError for bad input."""
        return self.predict_batch([source], topk=topk)[0]

    def predict_batch(self, sources: Sequence[ImageSource], topk: int = 5) -> list[list[Prediction]]:
        """One prediction list per source, in the same order. Raises on the first bad image;
        use ``recognize`` to get per-image errors instead."""
        results = self.recognize(sources, topk=topk)
        for result in results:
            if result.error is not None:
                raise result.error
        return [r.predictions for r in results]

    def recognize(self, sources: Iterable[ImageSource], topk: int = 5, *, embed: bool = False) -> list[Result]:
        """A Result per source, same order; a bad image gets its error and never stops the rest.
        ``embed``: each Result also carries its embedding (same inference)."""
        return list(self.iter_recognize(sources, topk, embed=embed))

    def iter_recognize(self, sources: Iterable[ImageSource], topk: int = 5, *,
                       embed: bool = False) -> Iterator[Result]:
        """Like ``recognize``, but yields results in input order as each batch finishes."""
        if isinstance(topk, bool) or not isinstance(topk, numbers.Integral) or topk < 1:
            raise ValueError(f"topk must be a whole number of at least 1, not {topk!r}")  # as the CLI says
        if isinstance(sources, (str, bytes, bytearray, memoryview, os.PathLike)):
            # one photo where a list belongs: walked as characters it read as "/: is a directory"
            raise TypeError("give a list of photos (one photo: predict(source), or [source])")
        if embed:
            self.backend.require_embedding()  # before any image: a model without one says why
        waiting: list[Result] = []  # results not yet yielded, in input order
        pending: list[tuple[Result, np.ndarray]] = []
        # uint8 pixels where the runtime normalises them in its graph, else float CHW arrays
        prepare = self.preprocessing.pixels if getattr(self.backend, "pixels_in", False) else self.preprocessing
        for source in sources:
            result = Result(describe(source), model=self.spec.name, backend=self.backend.name,
                            precision=self.backend.precision)
            waiting.append(result)
            try:
                pending.append((result, prepare(self.load(source))))
            except ImageError as exc:
                result.error = exc
            if len(pending) == self.batch_size:
                self._infer(pending, topk, embed)
                pending = []
                yield from waiting
                waiting = []
        if pending:
            self._infer(pending, topk, embed)
        yield from waiting

    def _infer(self, pending: list[tuple[Result, np.ndarray]], topk: int, embed: bool) -> None:
        # one photo: a view with a batch axis, no copy
        batch = pending[0][1][None] if len(pending) == 1 else np.stack([array for _, array in pending])
        predictions, embeddings = self._answer(batch, topk, embed)
        for i, ((result, _), answer) in enumerate(zip(pending, predictions)):
            result.predictions = answer
            if embed:
                result.embedding = embeddings[i]
