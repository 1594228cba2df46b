"""Near-duplicate groups: known clusters come back whole, chains join, order is deterministic."""

from __future__ import annotations

import numpy as np

from support.index_helpers import clustered, make_files, random_vectors, rows_for, unit
from shiwu.index import Manifest, create_index, near_duplicate_groups

DIM = 64


def test_known_clusters_come_back_exactly():
    copies, cluster = clustered(centres=25, per_centre=4, dimension=DIM, noise=0.15, seed=1)
    singles = random_vectors(200, DIM, seed=2)
    vectors = np.concatenate([singles[:100], copies, singles[100:]])
    cluster = np.concatenate([np.full(100, -1), cluster, np.full(100, -1)])
    rng = np.random.default_rng(5)
    order = rng.permutation(len(vectors))
    vectors, cluster = vectors[order], cluster[order]
    assert np.min(vectors[cluster == 3] @ vectors[cluster == 3].T) > 0.95
    groups = near_duplicate_groups(vectors, threshold=0.9)
    expected = sorted((sorted(np.flatnonzero(cluster == c).tolist()) for c in range(25)),
                      key=lambda g: g[0])
    assert groups == expected
    assert near_duplicate_groups(vectors, threshold=0.9) == groups  # deterministic


def test_a_chain_of_copies_is_one_group():
    a = unit(np.eye(1, DIM, 0)[0])
    b = unit(a + 0.5 * np.eye(1, DIM, 1)[0])       # a.b ~ 0.89
    c = unit(b + 0.5 * np.eye(1, DIM, 2)[0])       # b.c ~ 0.9, a.c ~ 0.8
    far = unit(np.eye(1, DIM, 10)[0])
    vectors = np.stack([far, c, a, b])
    assert vectors[2] @ vectors[1] < 0.85 < vectors[2] @ vectors[3]
    assert near_duplicate_groups(vectors, threshold=0.85) == [[1, 2, 3]]
    assert near_duplicate_groups(vectors, threshold=0.95) == []


def test_groups_of_an_index_start_with_the_largest_file(tmp_path):
    copies, cluster = clustered(centres=3, per_centre=3, dimension=DIM, noise=0.1, seed=4)
    vectors = np.concatenate([copies, random_vectors(20, DIM, seed=6)])
    paths = make_files(tmp_path / "photos", len(vectors))  # later files are larger
    with create_index(tmp_path / "index", Manifest(model="m", dimension=DIM)) as index:
        index.upsert(rows_for(paths), vectors)
        groups = near_duplicate_groups(index, threshold=0.9)
    assert [[row.path for row in group] for group in groups] == [
        [str(paths[i]) for i in (2, 1, 0)], [str(paths[i]) for i in (5, 4, 3)],
        [str(paths[i]) for i in (8, 7, 6)]]


def test_too_few_vectors():
    assert near_duplicate_groups(np.empty((0, DIM), np.float32)) == []
    assert near_duplicate_groups(random_vectors(1, DIM)) == []
