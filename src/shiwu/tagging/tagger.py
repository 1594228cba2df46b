"""``shiwu tag``'s work, photo by photo: recognise, merge the labels into the keywords already
there, write them where photo tools read them, and say what happened in one row per photo."""

from __future__ import annotations

import logging
import os
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

from .. import fsutil
from ..display import printable
from ..filenames import is_utf8, lossless, readable_values
from ..images import IMAGE_SUFFIXES, path_problem
from .exiftool_session import ExifTool, MetadataError
from .journal import Journal, identity
from .keywords import Keywords, merge, remove
from .writes import (FileState, SidecarChanged, TagWriteError, check_embeddable, embeds_iptc, remove_leftovers,
                     sidecar_path, state_of, write_embedded, write_sidecar)

log = logging.getLogger(__name__)
CHUNK = 64  # photos looked up in the journal and recognised together
# a sidecar another program writes between shiwu's read and its write is read and merged again;
# one that keeps changing is left to that program after this many tries, and the photo named
ATTEMPTS = 5


@dataclass(frozen=True)
class TagSettings:
    min_score: float = 0.3
    topk: int = 3
    in_place: bool = False
    sidecar_name: str = "full"
    remove: bool = False
    dry_run: bool = False
    languages: tuple[str, ...] = ("zh",)

    def journal_key(self, model: str) -> dict:
        return {"model": model, "min_score": self.min_score, "topk": self.topk,
                "in_place": self.in_place, "sidecar_name": self.sidecar_name,
                "languages": list(self.languages)}


@dataclass
class TagRow:
    image: str
    target: str
    changed: bool = False
    dry_run: bool = False
    resumed: bool = False   # labels from the journal of an earlier run, not recognised again
    labels: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    keywords: list[str] = field(default_factory=list)  # dc:subject after the run
    error: str | None = None

    def to_dict(self) -> dict:
        """The JSON row, valid text whatever the names (``shiwu.filenames``, as ``shiwu batch``'s
        rows): ``image`` (and a name inside ``error``) readable; ``path``, the photo's identity
        (the journal's key), and ``target`` lossless, so a script can open both even when a name is
        not UTF-8 (GBK from a Chinese Windows zip): ``filenames.os_path(row["target"])``."""
        target = self.target if is_utf8(self.target) else os.path.abspath(self.target)
        row = {"image": self.image, "path": identity(self.image), **asdict(self), "target": lossless(target)}
        return readable_values(row)


def labels_of(predictions, settings: TagSettings) -> list[str]:
    labels = []
    for prediction in predictions[:settings.topk]:
        if prediction.score < settings.min_score:
            continue
        if "zh" in settings.languages:
            labels.append(prediction.label)
        if "en" in settings.languages and prediction.label_en:
            labels.append(prediction.label_en)
    return list(dict.fromkeys(labels))


def tag_photos(photos: Iterable[str], settings: TagSettings, tool: ExifTool, *,
               recognize: Callable[[list[str]], Iterable] | None = None,
               journal: Journal | None = None,
               should_stop: Callable[[], bool] | None = None) -> Iterator[TagRow]:
    """One TagRow per photo, in order. ``recognize(paths)`` yields the recognizer's results for
    ``paths`` in order (not needed for ``remove``). When ``should_stop()`` turns true (Ctrl-C,
    SIGTERM) the photo being written is finished and no row comes for the photos after it:
    each is untouched or fully tagged, and the same run again continues with them."""
    stop = should_stop or (lambda: False)
    photos = list(photos)
    folders: set[Path] = set()
    for start in range(0, len(photos), CHUNK):
        if stop():
            return
        chunk = [Path(p) for p in photos[start:start + CHUNK]]
        for folder in {p.parent for p in chunk} - folders:
            folders.add(folder)
            for stray in [] if settings.dry_run else remove_leftovers(folder):
                log.info("removed %s, the temporary copy of an interrupted run", printable(stray))
        rows = {str(p): TagRow(str(p), str(_target(p, settings))) for p in chunk}
        states, labels = {}, {}
        for photo in chunk:
            row = rows[str(photo)]
            try:
                _check_target(photo, settings)
                states[photo] = FileState.of(photo)
            except (TagWriteError, OSError) as exc:
                row.error = _reason(photo, exc)
                continue
            if not settings.remove and journal is not None:
                earlier = journal.done(photo, Path(row.target))
                if earlier is not None:
                    labels[photo], row.resumed = earlier, True
        needed = [p for p in states if not settings.remove and p not in labels]
        if needed:
            results = recognize([str(p) for p in needed])
            try:
                for photo, result in zip(needed, results):
                    if result.error is not None:
                        rows[str(photo)].error = str(result.error)
                        states.pop(photo)
                    else:
                        labels[photo] = labels_of(result.predictions, settings)
                    if stop():
                        break
            finally:
                getattr(results, "close", lambda: None)()
        for photo in chunk:
            if stop():
                return
            row = rows[str(photo)]
            if photo in states:
                _apply(photo, row, labels.get(photo, []), states[photo], settings, tool, journal)
                if row.error and stop():
                    return  # failed while the stop came (exiftool may have been stopped too): the next run does it
            yield row


def _target(photo: Path, settings: TagSettings) -> Path:
    return photo if settings.in_place else sidecar_path(photo, settings.sidecar_name)


def _check_target(photo: Path, settings: TagSettings) -> None:
    problem = path_problem(photo)  # what load_image would say: a FIFO, a link loop, a folder
    if problem:
        raise TagWriteError(f"{photo}: {problem}")
    if settings.in_place:
        check_embeddable(photo)
    elif settings.sidecar_name == "base":
        # photo.jpg and photo.heic would share photo.xmp, and each run would undo the other's
        for sibling in photo.parent.glob(photo.stem + ".*"):
            if sibling != photo and sibling.suffix.lower() in IMAGE_SUFFIXES:
                raise TagWriteError(f"{photo}: {sidecar_path(photo, 'base')} would be shared with "
                                    f"{sibling.name}; use --sidecar-name full")


def _apply(photo: Path, row: TagRow, labels: list[str], state: FileState, settings: TagSettings,
           tool: ExifTool, journal: Journal | None) -> None:
    """Read, merge, write and record one photo's keywords. The folder is locked meanwhile, so two
    runs over one folder take turns photo by photo (each merges into what the other wrote), and
    the journal records the sidecar this run left, not one written after it."""
    target = Path(row.target)
    row.labels = labels
    try:
        with nullcontext() if settings.dry_run else fsutil.folder_lock(target.parent):
            for attempt in range(1, ATTEMPTS + 1):
                try:
                    _merge_and_write(photo, row, labels, state, settings, tool)
                    break
                except SidecarChanged as exc:
                    if attempt == ATTEMPTS:
                        raise TagWriteError(f"{exc}, {ATTEMPTS} times; left as it is now") from None
                    log.debug("%s; reading it again", exc)
            if journal is not None and not settings.remove and not settings.dry_run:
                journal.record(photo, target, labels)
    except (TagWriteError, MetadataError, OSError) as exc:
        row.error = _reason(photo, exc)
        row.changed = False
        row.keywords = []


def _merge_and_write(photo: Path, row: TagRow, labels: list[str], state: FileState,
                     settings: TagSettings, tool: ExifTool) -> None:
    target = Path(row.target)
    iptc = settings.in_place and embeds_iptc(photo)
    seen = None if settings.in_place else state_of(target)  # what the keywords are read from
    exists = target.exists() if settings.in_place else seen is not None
    current = tool.keywords(target, iptc=iptc) if exists else Keywords(iptc=() if iptc else None)
    change = remove(current) if settings.remove else merge(current, labels)
    row.changed, row.dry_run = change.changed, settings.dry_run
    row.added, row.removed = change.added, change.removed
    row.keywords = list(change.after.subject)
    if change.changed and not settings.dry_run:
        if settings.in_place:
            write_embedded(tool, photo, change.after, state)
        else:
            write_sidecar(tool, target, change.after, seen)


def _reason(photo: Path, exc: Exception) -> str:
    text = str(exc) if not isinstance(exc, OSError) else (exc.strerror or str(exc))
    return text if text.startswith(str(photo)) else f"{photo}: {text}"


__all__ = ["TagSettings", "TagRow", "tag_photos", "labels_of"]
