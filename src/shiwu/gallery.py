"""Classes taught by example: a folder with one sub-folder per class, a few photos in each.

No training: each example photo is embedded once (cached by its content, per model and run
setting), and a query is named by its k nearest examples, each voting for its class with its
cosine similarity (PaddleClas PP-ShiTu's recipe). The folder name, in any language, is the label.

::

    我的类别/
      快递柜/  1.jpg 2.jpg 3.jpg
      电饭煲/  a.png b.jpg

``merge`` (default): gallery classes whose best example is at least ``min_similarity`` close
come before the model's own labels; ``replace``: the gallery alone.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .calibrate import IMAGE_SUFFIXES
from .display import printable
from .fsutil import TEMP_PREFIX, atomic_write, remove_stray_temporaries
from .postprocess import Prediction
from .errors import ShiwuError

log = logging.getLogger(__name__)

MODES = ("merge", "replace")
DEFAULT_NEIGHBOURS = 5
# Measured with benchmarks/gallery.py (EfficientNet-Lite0, real photos): unseen views of a class's
# scene are at cosine 0.744-0.980 from its closest example, other classes' at 0.208-0.414. The
# threshold sits nearer the unrelated side, leaving room for category-level matches (any 快递柜).
DEFAULT_MIN_SIMILARITY = 0.5
# Above this many examples one query reads tens of MB of float32 vectors (10k x 1280-d: 51 MB,
# 1.5 ms at this machine's memory bandwidth): then, with faiss installed, 8-bit scalar-quantised
# vectors (a quarter of the bytes; cosines within ~1e-3) take 0.87 ms.
QUANTIZE_ABOVE = 4096


# A label becomes one folder name (shiwu serve's POST /v1/gallery/{label} creates it): short, and
# nothing a file system or a path could read as more than one plain name.
MAX_LABEL_LENGTH = 64
# File systems cap one name at 255 bytes (ext4, XFS, APFS; NTFS at 255 UTF-16 units): 64
# characters of four UTF-8 bytes each would not fit.
MAX_LABEL_BYTES = 255
# Names Windows reserves for devices, with or without an extension ("aux.txt"), in any case:
# a gallery folder must stay usable when copied to another system.
RESERVED_NAMES = ({"CON", "PRN", "AUX", "NUL"} | {f"COM{i}" for i in "0123456789¹²³"}
                  | {f"LPT{i}" for i in "0123456789¹²³"})
FORBIDDEN_IN_LABELS = set('/\\:*?"<>|')
# control, format (bidi overrides that make a name read differently), surrogates, unassigned,
# line and paragraph separators
FORBIDDEN_CATEGORIES = {"Cc", "Cf", "Cs", "Cn", "Zl", "Zp"}
# Photo formats kept as uploaded, by the name Pillow gives them; others are stored as PNG.
KEPT_FORMATS = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp",
                "GIF": ".gif", "TIFF": ".tif"}


class GalleryError(ShiwuError, ValueError):
    """The gallery folder cannot be used (missing, no classes, a class without photos)."""


def check_label(label: str) -> str:
    """``label`` (NFC-normalised) if it can be one class folder inside a gallery, else
    GalleryError saying why: never a path (no separators, no ``.``/``..``), never hidden
    (``class_folders`` skips dot-folders), no control or invisible characters."""
    name = unicodedata.normalize("NFC", str(label))
    if not name.strip():
        raise GalleryError("a class name must not be empty")
    if name != name.strip():
        raise GalleryError(f"class name {name!r} starts or ends with white space")
    if len(name) > MAX_LABEL_LENGTH:
        raise GalleryError(f"a class name has at most {MAX_LABEL_LENGTH} characters, not {len(name)}")
    if len(name.encode("utf-8")) > MAX_LABEL_BYTES:
        raise GalleryError(f"class name {name[:16]!r}… is {len(name.encode('utf-8'))} bytes in UTF-8; a folder "
                           f"name has at most {MAX_LABEL_BYTES}: use fewer or plainer characters")
    if name.endswith("."):
        raise GalleryError(f"class name {name!r} ends with '.': Windows drops it, so the folder would not "
                           "be portable")
    if name.split(".")[0].rstrip(" ").upper() in RESERVED_NAMES:
        raise GalleryError(f"class name {name!r} is a device name on Windows (CON, PRN, AUX, NUL, COM1-9, "
                           "LPT1-9, with or without an extension): the folder would not be portable")
    if name.startswith("."):
        raise GalleryError(f"class name {name!r} starts with '.': not a folder name the gallery reads")
    bad = next((c for c in name if c in FORBIDDEN_IN_LABELS
                or unicodedata.category(c) in FORBIDDEN_CATEGORIES), None)
    if bad is not None:
        raise GalleryError(f"class name {name!r} contains {bad!r} (U+{ord(bad):04X}): a class name is "
                           f"one plain name, without / \\ : * ? \" < > | or control characters")
    return name


def class_folder(folder: str | Path, label: str) -> Path:
    """The folder of class ``label`` inside gallery ``folder`` (checked; not created)."""
    root = Path(folder).resolve()
    target = root / check_label(label)
    if target.is_symlink() or target.resolve().parent != root:
        raise GalleryError(f"class folder {target} is a link or lies outside the gallery: refused")
    if target.exists() and not target.is_dir():
        raise GalleryError(f"{target.name!r} is a file in the gallery folder, not a class folder: "
                           "choose another class name")
    return target


def save_example(folder: str | Path, label: str, data: bytes, image_format: str | None,
                 image=None) -> tuple[Path, bool]:
    """Store one example photo of ``label`` in the gallery folder, named by its content (so
    the same photo twice is one file); ``(path, created)``. The bytes are kept as uploaded
    when ``image_format`` is a common photo format, else ``image`` (decoded, RGB) as PNG.
    Written atomically: a crash leaves no half photo for the next start to trip over."""
    target = class_folder(folder, label)
    suffix = KEPT_FORMATS.get(image_format or "")
    if suffix is None:
        if image is None:
            raise GalleryError(f"cannot store a {image_format or 'unknown'} image without its pixels")
        import io

        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        data, suffix = buffer.getvalue(), ".png"
    path = target / f"{hashlib.sha256(data).hexdigest()[:24]}{suffix}"
    if path.exists():
        return path, False
    target.mkdir(parents=True, exist_ok=True)
    atomic_write(path, data)  # its temporary file starts with ".": never read as an example
    return path, True


@dataclass
class Gallery:
    """Example embeddings and their class labels, ready for k-nearest-neighbour votes."""

    folder: Path
    labels: list[str]                  # class names, sorted
    vectors: np.ndarray                # (E, D) L2-normalised, one row per example photo
    example_class: np.ndarray          # (E,) index into ``labels``
    example_paths: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (photo, why)
    embedded_now: int = 0              # examples embedded by this load (the rest were cached)

    def __len__(self) -> int:
        return len(self.example_paths)

    def counts(self) -> dict[str, int]:
        """{label: example photos}, labels sorted."""
        found = np.bincount(self.example_class, minlength=len(self.labels))
        return {label: int(n) for label, n in zip(self.labels, found)}

    def with_examples(self, label: str, vectors: np.ndarray, paths: list[str]) -> "Gallery":
        """A new Gallery with these examples of ``label`` (a new class or an existing one) added;
        this one is left as it is (a server swaps the new one in while queries use the old)."""
        return extend(self, self.folder, label, vectors, paths)

    def classify(self, queries: np.ndarray, *, neighbours: int = DEFAULT_NEIGHBOURS) -> list[list[Prediction]]:
        """Per query (N, D), the gallery classes among its nearest examples, best first: score
        is the class's share of the similarity-weighted vote, similarity its closest example."""
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if queries.shape[1] != self.vectors.shape[1]:
            raise GalleryError(f"the gallery in {self.folder} has {self.vectors.shape[1]}-d embeddings, the "
                               f"model gives {queries.shape[1]}-d: it was built with another model")
        k = max(1, min(neighbours, len(self.vectors)))
        scores, nearest = self._nearest(queries, k)
        out = []
        for row, chosen in zip(scores, nearest):
            votes: dict[int, float] = {}
            best: dict[int, float] = {}
            for sim, example in zip(row, chosen):
                cls, sim = int(self.example_class[example]), float(sim)
                votes[cls] = votes.get(cls, 0.0) + max(sim, 0.0)
                best[cls] = max(best.get(cls, -1.0), sim)
            total = sum(votes.values()) or 1.0
            ranked = sorted(votes, key=lambda c: (-votes[c], -best[c], c))
            out.append([Prediction(self.labels[c], "", c, votes[c] / total, source="gallery",
                                   similarity=best[c]) for c in ranked])
        return out


    def _nearest(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(N, k) cosines and example positions of each query's k closest examples."""
        if len(self.vectors) > QUANTIZE_ABOVE and self._quantized() is not None:
            return self._quantized().search(np.ascontiguousarray(queries), k)
        similarity = queries @ self.vectors.T  # (N, E): cosines, the vectors are normalised
        nearest = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        return np.take_along_axis(similarity, nearest, axis=1), nearest

    def _quantized(self):
        if not hasattr(self, "_sq8"):
            try:
                import faiss
            except ImportError:  # the index extra is not installed: exact numpy search
                self._sq8 = None
            else:
                index = faiss.IndexScalarQuantizer(self.vectors.shape[1], faiss.ScalarQuantizer.QT_8bit,
                                                   faiss.METRIC_INNER_PRODUCT)
                index.train(self.vectors)
                index.add(self.vectors)
                self._sq8 = index
        return self._sq8


def extend(gallery: Gallery | None, folder: str | Path, label: str, vectors: np.ndarray,
           paths: list[str]) -> Gallery:
    """``gallery`` (None: an empty one in ``folder``) with examples of ``label`` added."""
    vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
    if len(vectors) != len(paths) or not len(paths):
        raise GalleryError(f"{len(paths)} example paths for {len(vectors)} vectors")
    old_labels = gallery.labels if gallery is not None else []
    if gallery is not None and vectors.shape[1] != gallery.vectors.shape[1]:
        raise GalleryError(f"the gallery in {folder} has {gallery.vectors.shape[1]}-d embeddings, these "
                           f"are {vectors.shape[1]}-d: they come from another model")
    labels = sorted(set(old_labels) | {label})
    position = {name: i for i, name in enumerate(labels)}
    if gallery is not None:
        owners = [position[old_labels[c]] for c in gallery.example_class]
        all_vectors = np.concatenate([gallery.vectors, vectors])
        all_paths = list(gallery.example_paths) + list(paths)
        skipped = list(gallery.skipped)
    else:
        owners, all_vectors, all_paths, skipped = [], vectors, list(paths), []
    owners += [position[label]] * len(paths)
    return Gallery(Path(folder), labels, np.ascontiguousarray(all_vectors), np.asarray(owners),
                   all_paths, skipped)


def merge(model: list[Prediction], gallery: list[Prediction], *, mode: str, min_similarity: float,
          topk: int) -> list[Prediction]:
    """The answer for one image: gallery classes close enough first (merge), or alone (replace)."""
    if mode == "replace":
        return gallery[:topk]
    close = [p for p in gallery if p.similarity is not None and p.similarity >= min_similarity]
    return (close + model)[:topk]


def _only_strays(sub: Path) -> bool:
    """Whether class folder ``sub`` holds nothing but temporary files: the first write of a new
    class was cut off (kill -9) before its photo was renamed into place."""
    try:
        entries = list(sub.iterdir())
    except OSError:
        return False
    return bool(entries) and all(p.name.startswith(TEMP_PREFIX) for p in entries)


def remove_strays(folder: str | Path, *, older_than: float) -> list[Path]:
    """Remove the temporary files killed writers left in the class folders of gallery
    ``folder`` (older than ``older_than`` seconds: a live writer's are newer), and a class folder
    they leave empty; what was removed."""
    removed: list[Path] = []
    try:
        subs = [p for p in Path(folder).iterdir() if p.is_dir() and not p.is_symlink()]
    except OSError:
        return removed
    for sub in [Path(folder)] + subs:  # the root too: the server's change marker is written there
        removed += remove_stray_temporaries(sub, older_than=older_than)
        if sub != Path(folder) and removed and removed[-1].parent == sub:
            try:
                sub.rmdir()  # only when the strays were all it held
            except OSError:
                pass
    return removed


def class_folders(folder: str | Path, *, allow_none: bool = False) -> dict[str, list[Path]]:
    """{label: example photos} of a gallery folder (photos may sit deeper in a class folder).
    ``allow_none``: a folder without classes gives {} instead of GalleryError."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise GalleryError(f"gallery {folder} is a file: give the folder that holds one sub-folder per class")
    if not folder.is_dir():
        raise GalleryError(f"gallery folder {folder} does not exist (one sub-folder per class, "
                           "named by its label, a few photos in each)")
    classes = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        bad = next((c for c in sub.name if unicodedata.category(c) in FORBIDDEN_CATEGORIES), None)
        if bad is not None:  # a label is printed, sent as JSON and written as a keyword: plain text only
            raise GalleryError(f"class folder {printable(sub)} has {bad!r} in its name (a control "
                               "character, or bytes that are not UTF-8): rename it to the class's plain name")
        if _only_strays(sub):
            log.warning("gallery: skipped %s: it holds only a photo whose writing was cut off", sub)
            continue
        # hidden files are not examples: a write cut by kill -9 leaves its ".tmp-…" file behind
        photos = sorted(p for p in sub.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                        and not p.name.startswith("."))
        classes[sub.name] = photos
    if not classes and allow_none:
        return classes
    if not classes:
        raise GalleryError(f"gallery folder {folder} has no class sub-folders: put each class's photos "
                           "in a folder named by its label, e.g. 我的类别/快递柜/1.jpg")
    empty = [name for name, photos in classes.items() if not photos]
    if empty:
        raise GalleryError(f"class folder {folder / empty[0]} has no photos "
                           f"({', '.join(sorted(IMAGE_SUFFIXES))}): add a few, or remove the folder")
    return classes


def load_gallery(folder: str | Path, recognizer) -> Gallery:
    """Embed the gallery's photos with ``recognizer`` (cached by content: a second run embeds
    only new or changed photos). Unreadable photos are listed and skipped."""
    folder = Path(folder)
    classes = class_folders(folder)
    store = EmbeddingCache(recognizer)
    labels = list(classes)
    vectors, owners, paths, skipped, todo = [], [], [], [], []
    for cls, label in enumerate(labels):
        for path in classes[label]:
            try:
                digest = _content_hash(path)
            except OSError as exc:
                skipped.append((str(path), str(exc)))
                continue
            todo.append((cls, path, digest))
    cached = store.get([digest for _, _, digest in todo])
    missing = [(cls, path, digest) for cls, path, digest in todo if digest not in cached]
    fresh = {}
    if missing:
        results = recognizer.recognize([path for _, path, _ in missing], topk=1, embed=True)
        for (cls, path, digest), result in zip(missing, results):
            if result.error is not None:
                reason = getattr(result.error, "reason", str(result.error))
                skipped.append((str(path), reason))
            else:
                fresh[digest] = result.embedding
        store.put(fresh)
    for cls, path, digest in todo:
        vector = cached.get(digest, fresh.get(digest))
        if vector is not None:
            vectors.append(vector)
            owners.append(cls)
            paths.append(str(path))
    for path, why in skipped:
        log.warning("gallery: skipped %s: %s", path, why)
    without = [labels[c] for c in range(len(labels)) if c not in set(owners)]
    if without:
        raise GalleryError(f"class {without[0]!r} in {folder} has no readable photo")
    return Gallery(folder, labels, np.stack(vectors).astype(np.float32), np.asarray(owners),
                   paths, skipped, embedded_now=len(fresh))


def _content_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class EmbeddingCache:
    """Example embeddings by photo content, per model and run setting (backend, precision and
    size change the vectors a little), in one SQLite file: safe for several processes."""

    def __init__(self, recognizer):
        from .cache import cache_dir

        key = "|".join([recognizer.spec.fingerprint(), recognizer.backend.name, recognizer.backend.precision,
                        str(recognizer.preprocessing.size)])
        folder = cache_dir() / "gallery"
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.sqlite"
        try:
            self._create()
        except sqlite3.DatabaseError:  # damaged ("file is not a database"): only a cache, rebuild it
            self.path.unlink(missing_ok=True)
            self._create()

    def _create(self) -> None:
        with self._connect() as db:
            db.execute("CREATE TABLE IF NOT EXISTS embedding (content TEXT PRIMARY KEY, vector BLOB NOT NULL)")

    def _connect(self):
        return sqlite3.connect(self.path, timeout=30)

    def get(self, digests: list[str]) -> dict[str, np.ndarray]:
        found = {}
        with self._connect() as db:
            for start in range(0, len(digests), 500):
                chunk = digests[start:start + 500]
                rows = db.execute(f"SELECT content, vector FROM embedding WHERE content IN "
                                  f"({','.join('?' * len(chunk))})", chunk)
                found.update({content: np.frombuffer(blob, dtype=np.float32) for content, blob in rows})
        return found

    def put(self, vectors: dict[str, np.ndarray]) -> None:
        if vectors:
            with self._connect() as db:
                db.executemany("INSERT OR REPLACE INTO embedding VALUES (?, ?)",
                               [(k, np.asarray(v, np.float32).tobytes()) for k, v in vectors.items()])
