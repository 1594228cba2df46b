"""Classes taught by example: where to put --min-similarity, and what the gallery costs per query.

1. Threshold. Each real photo (tests/data and the bundled calibration photos) becomes a class
   with 3 example views (random crops, flips, lighting: calibrate.views); 5 other, unseen views
   of every photo are the queries. For each query: the cosine of its closest example of its own
   class, and of its closest example of any other class. A threshold between the two
   distributions lets a gallery class through only for photos of it. (These are views of the same
   scene: a gallery of a product or a lab instrument. Category-level few-shot, e.g. "any 快递柜",
   is wider; measure it on your own photos with `shiwu eval DIR --gallery G`.)
2. Overhead. Gallery.classify over 1k / 10k / 100k example vectors against plain inference of one
   image, measured in the same run (the goal: <= 1 ms per query at 10k examples).

    python benchmarks/thresholds/gallery.py [--backend onnxruntime]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

from shiwu import Recognizer
from shiwu.calibrate import bundled_photos, views
from shiwu.gallery import DEFAULT_MIN_SIMILARITY, Gallery
from shiwu.images import load_image
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared helper
from bench_common import ROOT, call_seconds, print_table, record_run  # noqa: E402



def photos() -> list[Path]:
    found = sorted((ROOT / "tests" / "data").glob("*.jpg")) + bundled_photos()
    unique, seen = [], set()
    for path in found:  # the calibration set repeats some test photos
        if path.name not in seen:
            seen.add(path.name)
            unique.append(path)
    return unique


def embed_views(recognizer, images, count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = []
    for image in images:
        batch = recognizer.preprocessing.batch(views(image, count + 1, rng)[1:])  # not the photo itself
        out.append(recognizer.logits_and_embeddings(batch)[1])
    return np.stack(out)  # (photos, count, D)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--model", default=None)
    args = parser.parse_args()
    recognizer = Recognizer(args.model, backend=args.backend)
    paths = photos()
    images = [load_image(p, min_size=2 * recognizer.preprocessing.resize_short) for p in paths]
    examples = embed_views(recognizer, images, 3, seed=1)
    queries = embed_views(recognizer, images, 5, seed=2)
    # motorcycle_left / motorcycle_right are a stereo pair: one scene, so one class
    scene = [p.stem.replace("_left", "").replace("_right", "") for p in paths]
    own, other = [], []
    for c in range(len(paths)):
        for query in queries[c]:
            sims = examples @ query  # (photos, 3)
            same = np.array([s == scene[c] for s in scene])
            own.append(sims[same].max())
            other.append(sims[~same].max())
    own, other = np.array(own), np.array(other)
    print(f"{recognizer.model_name} ({recognizer.backend.name}): {len(set(scene))} scenes as classes, "
          f"3 example views each, {queries.shape[1]} unseen query views each\n")
    print_table(["closest example", "min", "p5", "median", "p95", "max"],
                [[name] + [f"{v:.3f}" for v in (values.min(), np.percentile(values, 5), np.median(values),
                                                 np.percentile(values, 95), values.max())]
                 for name, values in (("of its own class", own), ("of another class", other))])
    t = DEFAULT_MIN_SIMILARITY
    print(f"\nat --min-similarity {t}: {np.mean(own >= t):.1%} of queries keep their class, "
          f"{np.mean(other >= t):.1%} would let another class through")

    rng = np.random.default_rng(0)
    one = recognizer.preprocessing.batch([images[0]])
    inference = [t for t in call_seconds(lambda: recognizer.logits_and_embeddings(one), 30)]
    rows = []
    for count in (1_000, 10_000, 100_000):
        vectors = rng.standard_normal((count, examples.shape[2]), dtype=np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        gallery = Gallery(Path("."), [f"c{i}" for i in range(count // 10)], vectors,
                          np.arange(count) % (count // 10), [""] * count)
        single = statistics.median(call_seconds(lambda: gallery.classify(queries[0, :1]), 50))
        batch = statistics.median(call_seconds(lambda: gallery.classify(queries[:2].reshape(-1, queries.shape[2])[:8]), 20)) / 8
        rows.append([f"{count:,}", f"{single * 1e3:.3f}", f"{batch * 1e3:.3f}", f"{batch / statistics.median(inference):.1%}"])
    print()
    print_table(["examples", "ms/query, one query", "ms/query, batches of 8",
                 f"batch of 8 vs one inference ({statistics.median(inference) * 1e3:.2f} ms)"], rows)

if __name__ == "__main__":
    sys.exit(record_run("gallery", main))
