"""Near-duplicates: groups of photos whose embeddings are closer than a threshold.

Pairs come from a k-nearest-neighbour search of every vector against the rest (exact flat
search for raw vectors, the index's own engine for an index), kept when their cosine is at
least the threshold; groups are the connected components of those pairs, so a chain of copies
(original -> resized -> resized and cropped) is one group even when its ends are further apart.
"""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np

from .base import Index
from .faiss_engine import FaissEngine


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


__all__ = ["near_duplicate_groups", "DEFAULT_DUPLICATE_THRESHOLD", "DEFAULT_NEIGHBOURS"]
