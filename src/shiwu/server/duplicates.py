"""The duplicate groups of the served index (GET /v1/duplicates): `shiwu dedupe --index`'s
tiers, computed on one background thread, one search at a time, kept for a minute.

Finding duplicates reads every indexed file (its perceptual hash), which takes seconds to
minutes: it never runs on the event loop, never twice at once, and a request that waits
longer than the request timeout is told to come back for the answer the thread goes on
computing. An index over ``MAX_ROWS`` is refused: ``shiwu dedupe --index`` is the tool there.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import stat
import threading
import time

log = logging.getLogger(__name__)

MAX_ROWS = 20_000         # at ~10 ms a photo on two threads, about two minutes of hashing
KEEP_SECONDS = 60.0       # an answer is reused this long (the page asks again on each visit)
HASH_THREADS = 2          # a server keeps cores for recognising


class Busy(Exception):
    """Another duplicates search is running (-> 503)."""


class _LockedIndex:
    """What ``tiered_duplicate_groups`` reads of an Index, each call under the served index's
    lock (its search structure is not safe to race), with the rows limited to files that are
    still the regular files that were indexed: the long file hashing runs without the lock,
    and a file replaced since (by a pipe, a link, another photo) takes no part. The rows left
    out are kept in ``unread`` with why: the answer names them."""

    def __init__(self, index, lock: threading.Lock):
        self._index, self._lock = index, lock
        self.unread: list[tuple[object, str]] = []

    def all_rows(self):
        with self._lock:
            rows = list(self._index.all_rows())
        kept = []
        for row in rows:
            changed = _changed(row)
            if changed is None:
                kept.append(row)
            else:
                self.unread.append((row, changed))
        return iter(kept)

    def iter_vectors(self, chunk_rows: int = 8192):
        with self._lock:  # vectors of 20,000 rows are a few tens of MB: read them in one go
            return iter(list(self._index.iter_vectors(chunk_rows)))

    def search_ids(self, queries, k: int):
        with self._lock:
            return self._index.search_ids(queries, k)


def _locked_index(index, lock: threading.Lock) -> _LockedIndex:
    from ..index import Index

    # tiered_duplicate_groups tells an index (vectors, similar tier) from a list of rows by type;
    # registered here, not at import, so that a server without --index never loads faiss
    Index.register(_LockedIndex)
    return _LockedIndex(index, lock)


def _changed(row) -> str | None:
    """Why the file of ``row`` is no longer what was indexed, or None. ``os_path``: a name that is
    not UTF-8 is stored as a file:// URI (its identity), which names no file."""
    try:
        info = os.lstat(row.os_path)
    except OSError as exc:
        return f"gone since it was indexed ({exc.strerror or exc})"
    if not stat.S_ISREG(info.st_mode):
        return "no longer a regular file (replaced since it was indexed)"
    if (info.st_size, info.st_mtime_ns) != (row.size, row.mtime_ns):
        return "changed since it was indexed: run `shiwu index` again"
    return None


class DuplicateFinder:
    """Duplicate groups by (tier, threshold), computed on a daemon thread (a thread stuck on a
    slow disk must not hang shutdown) and kept ``KEEP_SECONDS`` while the index keeps its rows."""

    def __init__(self, served_index):
        self._served = served_index
        self._guard = threading.Lock()
        self._answers: dict[tuple, tuple[float, int, concurrent.futures.Future]] = {}

    async def groups(self, tier: str, threshold: float, rows: int, timeout: float) -> dict | None:
        """``{"groups": [...], "unread": [...]}`` ready for JSON, or None when they took longer
        than ``timeout`` (the thread goes on: asking again later gets them). Raises Busy when
        another search runs."""
        future = self._start(tier, threshold, rows)
        try:
            return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), timeout)
        except TimeoutError:
            return None

    def _start(self, tier: str, threshold: float, rows: int) -> concurrent.futures.Future:
        key = (tier, threshold)
        now = time.monotonic()
        with self._guard:
            kept = self._answers.get(key)
            if kept is not None:
                started, kept_rows, future = kept
                failed = future.done() and future.exception() is not None
                if not future.done() or (not failed and kept_rows == rows and now - started < KEEP_SECONDS):
                    return future
            if any(not f.done() for _, _, f in self._answers.values()):
                raise Busy("another duplicates search is running: retry when it is done")
            future = concurrent.futures.Future()
            self._answers = {k: v for k, v in self._answers.items() if now - v[0] < KEEP_SECONDS}
            self._answers[key] = (now, rows, future)
        threading.Thread(target=self._run, args=(future, tier, threshold), daemon=True,
                         name="shiwu-duplicates").start()
        return future

    def _run(self, future: concurrent.futures.Future, tier: str, threshold: float) -> None:
        from ..index.dedupe import tiered_duplicate_groups

        served = self._served
        started = time.monotonic()
        try:
            index = _locked_index(served.index, served.lock)
            found = tiered_duplicate_groups(index, threshold, tier, threads=HASH_THREADS,
                                            unreadable=lambda row, reason: index.unread.append((row, reason)))
            answer = {"groups": [_group(g) for g in found],
                      "unread": sorted((_unread(row, reason) for row, reason in index.unread),
                                       key=lambda item: item["path"])}
        except BaseException as exc:  # the waiting request reports it (500) and the next one retries
            log.warning("duplicates (%s, %.2f) failed: %s", tier, threshold, exc)
            future.set_exception(exc)
            return
        log.info("duplicates (%s, %.2f): %d groups, %d files not read, in %.1f s", tier, threshold,
                 len(answer["groups"]), len(answer["unread"]), time.monotonic() - started)
        future.set_result(answer)


def _unread(row, reason: str) -> dict:
    """A photo of the index left out of the exact and near tiers (and, when its file changed or
    went, of every tier): named in the answer, never dropped without a word."""
    from ..filenames import readable

    return {"path": row.path, "id": str(row.id), "reason": readable(reason)}


def _group(group) -> dict:
    """DuplicateGroup.to_dict() plus what the page needs: each photo's row id and thumbnail."""
    out = group.to_dict()
    for image, row in zip(out["images"], group.members):
        image["id"] = str(row.id)  # a string: row ids exceed JavaScript's exact integers
        image["thumbnail"] = f"/v1/thumbnails/{row.id}"
    return out
