"""The gallery ``shiwu serve --gallery DIR`` recognises by and POST /v1/gallery/{label} adds to.

The folder is the store (one sub-folder per class, photos named by content) and the example
cache (``shiwu.gallery.EmbeddingCache``, SQLite, by photo content) holds the vectors. Both are
on disk and shared by every worker process of ``serve --workers N``: after a worker adds
examples it rewrites the change marker ``DIR/.shiwu-gallery-changed``; every worker compares the
marker and the modification times of the folder and its class folders (a ``stat`` each) before
each recognition and gallery listing and, when another process or a person changed them
(``rm -r DIR/class``, a folder of photos copied in), reloads the gallery from the folder
(vectors come from the shared cache, so nothing is embedded again). Additions are serialised across processes by ``fcntl.flock`` on
``DIR/.shiwu-gallery.lock``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import uuid
from contextlib import contextmanager
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

NO_GALLERY = ("this server has no gallery folder: start it with `shiwu serve --gallery DIR` "
              "(DIR is created if missing; one sub-folder per class)")
CHANGE_MARKER = ".shiwu-gallery-changed"
LOCK_FILE = ".shiwu-gallery.lock"
# A temporary file older than this in a class folder was left by a writer that was killed.
STRAY_AGE_S = 60.0


class ServedGallery:
    """The gallery folder of one app, its recognizer's examples kept in step with the folder."""

    def __init__(self, settings):
        self.settings = settings
        self.folder = Path(settings.gallery).resolve() if settings.gallery else None
        self.recognizer = None
        self.cache = None
        self.lock = asyncio.Lock()  # this process's additions one at a time (files, then swap)
        self._reload_lock = threading.Lock()
        self._seen = None  # the change marker as this process last saw it

    @property
    def configured(self) -> bool:
        return self.folder is not None

    def load(self, recognizer) -> None:
        """On the loading thread, before /readyz says ready."""
        from ..gallery import DEFAULT_MIN_SIMILARITY, MODES, EmbeddingCache, GalleryError, remove_strays

        s = self.settings
        if s.gallery_mode not in MODES:
            raise GalleryError(f"gallery mode must be one of {', '.join(MODES)}, not {s.gallery_mode!r}")
        self.recognizer = recognizer
        self.cache = EmbeddingCache(recognizer)  # where added examples' vectors are kept
        recognizer.gallery_mode = s.gallery_mode
        recognizer.min_similarity = DEFAULT_MIN_SIMILARITY if s.min_similarity is None else s.min_similarity
        self.folder.mkdir(parents=True, exist_ok=True)
        for stray in remove_strays(self.folder, older_than=STRAY_AGE_S):
            log.warning("gallery: removed %s, left by a write that was cut off", stray)
        self._seen = self._marker()
        self._load_folder()
        if recognizer.gallery is not None:
            log.info("gallery %s: %d classes, %d examples (%d embedded now)", self.folder,
                     len(recognizer.gallery.labels), len(recognizer.gallery), recognizer.gallery.embedded_now)

    def _load_folder(self) -> None:
        """The recognizer's gallery read from the folder (None while it has no class)."""
        from ..gallery import class_folders

        rec = self.recognizer
        # an empty class folder or one with no readable photo: GalleryError, said at start
        if class_folders(self.folder, allow_none=True):
            rec.use_gallery(str(self.folder), mode=self.settings.gallery_mode, min_similarity=rec.min_similarity)
        else:
            rec.gallery = None

    def _marker(self):
        """What says the gallery changed: the marker another worker rewrites, and the folder and
        its class folders as they stand (a class removed or photos put in by hand change their
        modification times: the gallery lives on disk). A stat per class per request."""
        try:
            info = os.stat(self.folder / CHANGE_MARKER)
            marker = info.st_ino, info.st_mtime_ns, info.st_size
        except FileNotFoundError:
            marker = None
        try:
            folders = [(self.folder.name, os.stat(self.folder).st_mtime_ns)]
            with os.scandir(self.folder) as entries:
                folders += sorted((e.name, e.stat().st_mtime_ns) for e in entries
                                  if not e.name.startswith(".") and e.is_dir())
        except OSError:
            folders = None
        return marker, folders

    async def refresh(self) -> None:
        """Reload when another process (a worker, a `shiwu` command, a person) changed the gallery;
        not while this process adds examples (its own swap follows)."""
        if self.folder is None or self.recognizer is None or self.lock.locked() or self._marker() == self._seen:
            return
        await asyncio.to_thread(self._reload)

    def _reload(self) -> None:
        from ..gallery import GalleryError
        from .middleware import once_every

        with self._reload_lock:
            marker = self._marker()
            if marker == self._seen:
                return  # another request reloaded it meanwhile
            try:
                self._load_folder()
            except (GalleryError, OSError) as exc:  # e.g. an empty class folder made by hand
                once_every("gallery-reload", "gallery %s changed but cannot be read (%s): answering "
                           "with the classes it had", self.folder, exc)
                return
            self._seen = marker
            log.info("gallery %s changed in another process: reloaded (%d classes)", self.folder,
                     len(self.counts()))

    @contextmanager
    def _locked(self):
        import fcntl

        with open(self.folder / LOCK_FILE, "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def counts(self) -> dict[str, int]:
        gallery = self.recognizer.gallery if self.recognizer is not None else None
        return gallery.counts() if gallery is not None else {}

    def add_examples(self, label: str, items: list) -> tuple[list, list]:
        """On a worker thread: store each good photo in the class folder, then swap in the grown
        gallery. (added, skipped); photos already in the class are skipped, not doubled."""
        from ..fsutil import atomic_write
        from ..gallery import _content_hash, extend, save_example

        rec = self.recognizer
        with self._locked():
            if self._marker() != self._seen:  # another process added meanwhile: start from its
                self._reload()
            gallery = rec.gallery
            known = set(gallery.example_paths) if gallery is not None else set()
            added, skipped, vectors, paths = [], [], [], []
            for item in items:
                result = item.result
                if result.error is not None:
                    skipped.append({"image": result.image, "error": result.to_dict()["error"]["message"]})
                    continue
                path, created = save_example(self.folder, label, item.data, item.image_format, item.image)
                if (not created and str(path) in known) or str(path) in paths:
                    skipped.append({"image": result.image, "error": f"already an example of {label}"})
                    continue
                vectors.append(result.embedding)
                paths.append(str(path))
                added.append({"image": result.image, "file": path.name})
            if vectors:
                # cached by file content, as `shiwu predict --gallery` looks them up: a restart,
                # another worker or the CLI on the same folder does not embed them again
                self.cache.put({_content_hash(Path(p)): v for p, v in zip(paths, vectors)})
                rec.gallery = extend(gallery, self.folder, label, np.stack(vectors), paths)
                atomic_write(self.folder / CHANGE_MARKER, uuid.uuid4().hex)
                self._seen = self._marker()
        return added, skipped
