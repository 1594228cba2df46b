"""Which cosine similarity makes two photos near-duplicates? Measured, not guessed.

Every bundled photo (tests/data and src/shiwu/calibration: 11 scenes) is edited the ways a
collection accumulates copies: resized (x0.25..x0.75), recompressed (JPEG q30..q90), cropped
(80..95%, centred and off-centre), brightened or darkened, made grayscale, and combinations.
The copies, and the scenes' other bundled files (re-encodings made elsewhere), are compared with
their original; every pair of files from different scenes is an unrelated pair. Two rows show
what is similar but not a copy: the two halves of one photo, and the motorcycle stereo pair.

Pairs that are not copies (unrelated photos, halves, the stereo pair) are the negatives. The
threshold is the middle of the gap between the most similar negative and the least similar
copy when there is a gap, else the first step above the most similar negative: wrongly
merging two different photos (and deleting one) is worse than missing a copy. A sweep shows
the trade-off, and a held-out check picks the threshold on half of the scenes and counts what
it catches and wrongly merges on the other half.

    python benchmarks/thresholds/dedupe_threshold.py [--extra DIR ...]

``--extra`` adds folders of more photos, each file its own scene unless its name says
otherwise (e.g. scikit-image's bundled skimage/data, for more unrelated pairs).
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared helpers
from bench_common import record_run  # noqa: E402
from photo_embeddings import COPY_KINDS, Embedder, halves, open_rgb, photo_files, scene_of  # noqa: E402

STEP = 0.01  # thresholds are reported on this grid


def pick_threshold(copies: np.ndarray, negatives: np.ndarray) -> tuple[float, float]:
    """(threshold, gap): gap = lowest copy - highest negative (below 0 when they overlap)."""
    lowest, highest = float(copies.min()), float(negatives.max())
    gap = lowest - highest
    steps = np.floor(round((lowest + highest) / 2 / STEP, 6)) if gap > 2 * STEP else (
        np.floor(round(highest / STEP, 6)) + 1)  # no real gap: the first step above every negative
    return round(float(steps) * STEP, 2), gap


def build(extra: list[Path]):
    """Embeddings of every photo, its edited copies and halves, with each one's scene, kind
    and (for a copy) the row of its original."""
    embed = Embedder()
    by_scene: dict[str, list[Path]] = defaultdict(list)
    for path in photo_files(extra):
        by_scene[scene_of(path)].append(path)
    images, scene, kind, original_of = [], [], [], []

    def add(image, name: str, what: str, original: int = -1) -> int:
        images.append(image)
        scene.append(name)
        kind.append(what)
        original_of.append(original)
        return len(images) - 1

    for name, paths in sorted(by_scene.items()):
        original = open_rgb(paths[0])
        row = add(original, name, "original")
        for other in paths[1:]:
            stereo = name == "motorcycle" and other.stem != paths[0].stem
            add(open_rgb(other), name,
                "other viewpoint (stereo)" if stereo else "re-encoded (bundled copy)", row)
        for copy_kind, edits in COPY_KINDS.items():
            for _, edit in edits:
                add(edit(original), name, copy_kind, row)
        for half in halves(original):
            add(half, name, "half")
    vectors = embed(images)
    return embed.model_name, vectors, np.array(scene), np.array(kind), np.array(original_of)


def similarity_table(vectors, scene, kind, original_of, scenes: set[str]):
    """kind -> cosines for the pairs whose scenes are all in ``scenes``."""
    pairs = defaultdict(list)
    for i in np.flatnonzero(original_of >= 0):
        if scene[i] in scenes:
            pairs[kind[i]].append(float(vectors[i] @ vectors[original_of[i]]))
    for name in scenes:
        h = np.flatnonzero((scene == name) & (kind == "half"))
        if len(h) == 2:
            pairs["halves of one photo (not a copy)"].append(float(vectors[h[0]] @ vectors[h[1]]))
    # unrelated: every file or copy of one scene against every one of another (halves aside)
    members = {name: np.flatnonzero((scene == name) & (kind != "half")) for name in scenes}
    for a, b in itertools.combinations(sorted(scenes), 2):
        pairs["unrelated"] += (vectors[members[a]] @ vectors[members[b]].T).ravel().tolist()
        pairs["unrelated (originals only)"].append(
            float(vectors[members[a][0]] @ vectors[members[b][0]]))
    return {k: np.array(v) for k, v in pairs.items()}


DUPLICATE_KINDS = [*COPY_KINDS, "re-encoded (bundled copy)"]
NEGATIVE_KINDS = ["other viewpoint (stereo)", "halves of one photo (not a copy)", "unrelated"]
SWEEP = (0.80, 0.85, 0.88, 0.90, 0.92, 0.94, 0.96)
ORDER = [*DUPLICATE_KINDS, "other viewpoint (stereo)", "halves of one photo (not a copy)",
         "unrelated (originals only)", "unrelated"]


def print_table(pairs, threshold: float, title: str) -> None:
    print(f"\n{title}")
    print(f"{'pairs':34} {'n':>6} {'min':>6} {'p5':>6} {'p50':>6} {'p95':>6} {'max':>6} "
          f"{'>=T':>7}")
    for name in ORDER:
        if name not in pairs or not len(pairs[name]):
            continue
        v = pairs[name]
        p5, p50, p95 = np.percentile(v, [5, 50, 95])
        print(f"{name:34} {len(v):6d} {v.min():6.3f} {p5:6.3f} {p50:6.3f} {p95:6.3f} "
              f"{v.max():6.3f} {np.mean(v >= threshold):7.1%}")


def duplicates(pairs) -> np.ndarray:
    return np.concatenate([pairs[k] for k in DUPLICATE_KINDS if k in pairs])


def negatives(pairs) -> np.ndarray:
    return np.concatenate([pairs[k] for k in NEGATIVE_KINDS if k in pairs])


def print_sweep(pairs) -> None:
    print("\nshare of pairs at or above each threshold")
    print(f"{'pairs':34} " + " ".join(f"{t:>6.2f}" for t in SWEEP))
    for name in ORDER:
        if name in pairs and len(pairs[name]):
            print(f"{name:34} " + " ".join(f"{np.mean(pairs[name] >= t):6.0%}" for t in SWEEP))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--extra", type=Path, action="append", default=[])
    args = parser.parse_args()
    model, vectors, scene, kind, original_of = build(args.extra)
    scenes = sorted(set(scene))
    print(f"model {model}: {len(vectors)} images of {len(scenes)} scenes "
          f"({', '.join(scenes)}), {vectors.shape[1]}-d")

    pairs = similarity_table(vectors, scene, kind, original_of, set(scenes))
    threshold, gap = pick_threshold(duplicates(pairs), negatives(pairs))
    print_table(pairs, threshold, f"all scenes: threshold T = {threshold:.2f} "
                f"(lowest copy - highest negative = {gap:+.3f})")
    print_sweep(pairs)
    h = np.flatnonzero(kind == "half")
    print("halves by scene: " + ", ".join(
        f"{scene[a]} {vectors[a] @ vectors[b]:.3f}" for a, b in zip(h[0::2], h[1::2])))

    print("\nheld out: T picked on one half of the scenes, tried on the other")
    print(f"{'picked on':>10} {'T':>5} | on the other half: {'copies caught':>13} "
          f"{'negatives merged':>17}")
    halves_of_scenes = (set(scenes[0::2]), set(scenes[1::2]))
    for pick, test in (halves_of_scenes, halves_of_scenes[::-1]):
        fit = similarity_table(vectors, scene, kind, original_of, pick)
        held = similarity_table(vectors, scene, kind, original_of, test)
        t, _ = pick_threshold(duplicates(fit), negatives(fit))
        caught = np.mean(duplicates(held) >= t)
        merged = np.mean(negatives(held) >= t)
        print(f"{len(pick):>4} scenes {t:5.2f} | {'':19}{caught:13.1%} {merged:17.2%}  "
              f"(held-out: lowest copy {duplicates(held).min():.3f}, "
              f"highest negative {negatives(held).max():.3f})")


if __name__ == "__main__":
    sys.exit(record_run("dedupe_threshold", main))
