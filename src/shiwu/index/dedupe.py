"""Near-duplicates: groups of photos whose embeddings are closer than a threshold, and the
tiers of ``shiwu dedupe`` (exact, near, similar: ``tiered_duplicate_groups``).

Pairs come from a k-nearest-neighbour search of every vector against the rest (exact flat
search for raw vectors, the index's own engine for an index), kept when their cosine is at
least the threshold; groups are the connected components of those pairs, so a chain of copies
(original -> resized -> resized and cropped) is one group even when its ends are further apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np

from .base import Index
from .faiss_engine import FaissEngine
from .rows import IndexRow


# benchmarks/dedupe_threshold.py, EfficientNet-Lite0 on the 20 bundled photos (11 scenes):
# the most similar pairs that are not copies are the two halves of the Hubble deep field
# (0.910) and the motorcycle stereo pair (0.893); unrelated photos stay below 0.44. 0.92 is the
# first step above them all and still catches 100% of brightened and re-encoded copies, 86% of
# JPEG q30-90, 73% of resized, 55% of 80-95% crops, 27% of grayscale. Copies and "another
# photo of the same thing" overlap between 0.65 and 0.95 in these features, so a lower
# --threshold (0.85: 91% of crops) also groups burst and stereo shots. Picked on either half
# of the scenes alone, the rule gives 0.90 and 0.92. Measured for Lite0 only: other models'
# scores may sit elsewhere.
DEFAULT_DUPLICATE_THRESHOLD = 0.92
DEFAULT_NEIGHBOURS = 16  # per photo; larger groups still join through their members' links
CHUNK = 4096


def similar_pairs(search: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]],
                  chunks: Iterable[tuple[np.ndarray, np.ndarray]], threshold: float,
                  neighbours: int) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) id arrays of the pairs with cosine >= threshold among each vector's neighbours."""
    firsts, seconds = [], []
    for ids, vectors in chunks:
        scores, found = search(vectors, neighbours + 1)  # +1: each vector finds itself
        keep = (scores >= threshold) & (found >= 0) & (found != ids[:, None])
        rows, columns = np.nonzero(keep)
        firsts.append(ids[rows])
        seconds.append(found[rows, columns])
    if not firsts:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(firsts), np.concatenate(seconds)


def components(a: np.ndarray, b: np.ndarray) -> list[np.ndarray]:
    """The connected components (two or more members) of the graph with edges a[i]-b[i]."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if len(a) == 0:
        return []
    nodes, inverse = np.unique(np.concatenate([a, b]), return_inverse=True)
    edges = coo_matrix((np.ones(len(a), np.int8), (inverse[:len(a)], inverse[len(a):])),
                       shape=(len(nodes), len(nodes)))
    _, labels = connected_components(edges, directed=False)
    order = np.argsort(labels, kind="stable")
    groups = np.split(nodes[order], np.flatnonzero(np.diff(labels[order])) + 1)
    return [group for group in groups if len(group) > 1]


def near_duplicate_groups(source: Index | np.ndarray,
                          threshold: float = DEFAULT_DUPLICATE_THRESHOLD, *,
                          neighbours: int = DEFAULT_NEIGHBOURS) -> list[list]:
    """Groups of near-duplicates, each ``[representative, duplicate, ...]``.

    For an Index: lists of IndexRow; the representative is the largest file (the least
    compressed or downsized copy, most likely the original), ties by path; members follow in
    that order and groups by their representative's path. For an (N, D) array of normalised
    vectors: lists of row numbers, ascending, the first as representative, groups by it.
    """
    if isinstance(source, Index):
        a, b = similar_pairs(source.search_ids, source.iter_vectors(CHUNK), threshold, neighbours)
        groups = components(a, b)
        found = source.rows(np.concatenate(groups).tolist() if groups else [])
        ordered = [sorted((found[i] for i in group if i in found),
                          key=lambda row: (-row.size, row.path)) for group in groups]
        return sorted((g for g in ordered if len(g) > 1), key=lambda g: g[0].path)
    vectors = np.ascontiguousarray(source, dtype=np.float32)
    if len(vectors) < 2:
        return []
    engine = FaissEngine.from_vectors(vectors)
    positions = np.arange(len(vectors), dtype=np.int64)
    chunks = ((positions[s:s + CHUNK], vectors[s:s + CHUNK]) for s in range(0, len(vectors), CHUNK))
    a, b = similar_pairs(engine.search, chunks, threshold, min(neighbours, len(vectors) - 1))
    return sorted((sorted(int(i) for i in group) for group in components(a, b)), key=lambda g: g[0])




# --- tiers: exact (same bytes or pixels), near (perceptual hash), similar (embeddings) ----------

TIERS = ("exact", "near", "similar")


@dataclass
class DuplicateGroup:
    """``members[0]`` is the representative; ``matches[i]`` is how member i is tied to it
    (None for the representative); ``tier`` is the loosest tie the group needs."""
    members: list
    tier: str
    matches: list

    def to_dict(self) -> dict:
        return {"tier": self.tier, "images": [
            {"path": row.path, "size": row.size, "match": match} for row, match in zip(self.members, self.matches)]}


def tiered_duplicate_groups(source: Index | Sequence[IndexRow], threshold: float = DEFAULT_DUPLICATE_THRESHOLD,
                            tier: str = "similar", *, neighbours: int = DEFAULT_NEIGHBOURS,
                            threads: int | None = None,
                            unreadable: Callable[[IndexRow, str], None] | None = None) -> list[DuplicateGroup]:
    """Groups of copies up to ``tier``: `exact` only byte- or pixel-identical files, `near` also
    the same photo resized, re-encoded, re-lit or turned grey (perceptual hash), `similar` also
    photos whose embeddings (an Index's vectors) are at least ``threshold`` alike. Rows whose
    file cannot be read or decoded only join through embeddings; each is passed to
    ``unreadable(row, reason)`` so that the caller names it."""
    from ..fingerprints import Fingerprint, exact_pairs, fingerprints, near_pairs

    if tier not in TIERS:
        raise ValueError(f"tier must be one of {', '.join(TIERS)}, got {tier!r}")
    rows = list(source.all_rows()) if isinstance(source, Index) else list(source)
    ids = np.array([row.id for row in rows], np.int64)
    # the real path as the OS takes it: absolute (an index may be used from another folder), and
    # the bytes of a name that is not UTF-8, not its file:// identity (which names no file)
    files = [row.os_path for row in rows]
    prints = fingerprints(files, threads)
    for row, found in zip(rows, prints):
        if unreadable is not None and not isinstance(found, Fingerprint):
            unreadable(row, found.reason)
    have = np.array([i for i, p in enumerate(prints) if isinstance(p, Fingerprint)], np.int64)
    hashes = np.stack([prints[i].phash for i in have]) if len(have) else np.empty((0, 8), np.uint8)
    near_a, near_b = near_pairs(hashes)
    near_a, near_b = have[near_a], have[near_b]
    exact_a, exact_b = exact_pairs(files, prints, near_a, near_b)
    edges = {"exact": (ids[exact_a], ids[exact_b]), "near": (ids[near_a], ids[near_b])}
    if tier == "similar" and isinstance(source, Index):
        edges["similar"] = similar_pairs(source.search_ids, source.iter_vectors(CHUNK), threshold, neighbours)
    by_id = {row.id: row for row in rows}
    linked = lambda upto: _joined(edges, TIERS[:TIERS.index(upto) + 1])  # noqa: E731
    component_of = {name: _membership(components(*linked(name))) for name in TIERS[:TIERS.index(tier) + 1]}
    groups = []
    for group in components(*linked(tier)):
        members = sorted((by_id[i] for i in group.tolist() if i in by_id), key=lambda row: (-row.size, row.path))
        if len(members) < 2:
            continue
        head = members[0].id

        def tie(row, head=head) -> str:
            return next(name for name in TIERS if name not in component_of or
                        component_of[name].get(row.id, -1) == component_of[name].get(head, -2))
        matches = [None] + [tie(row) for row in members[1:]]
        # every member tied to the representative within the loosest tie: one component there
        loosest = TIERS[max(TIERS.index(m) for m in matches[1:])]
        groups.append(DuplicateGroup(members, loosest, matches))
    return sorted(groups, key=lambda g: g.members[0].path)


def _joined(edges: dict, names) -> tuple[np.ndarray, np.ndarray]:
    parts = [edges[name] for name in names if name in edges]
    return (np.concatenate([a for a, _ in parts]), np.concatenate([b for _, b in parts])) if parts else \
        (np.empty(0, np.int64), np.empty(0, np.int64))


def _membership(groups: list[np.ndarray]) -> dict[int, int]:
    return {int(i): number for number, group in enumerate(groups) for i in group}


__all__ = ["near_duplicate_groups", "tiered_duplicate_groups", "DuplicateGroup", "TIERS",
           "DEFAULT_DUPLICATE_THRESHOLD", "DEFAULT_NEIGHBOURS"]
