"""Vector search engines on embeddings shaped like real ones: build rate, query latency, recall.

Vectors: EfficientNet-Lite0 embeddings of ~1000 random edits (crops of 10-100%, flips, colour
jitter, grayscale, JPEG q40-95) of the bundled photos are the real base. Synthetic vectors are
points around "subjects": each subject is a random mix of two real embeddings, each point that
subject plus noise drawn in the real embeddings' principal directions (scaled by their singular
values) and a little isotropic noise, then L2-normalised. So the data keeps the real features'
non-negative cone and spectrum (unrelated cosines ~0.1-0.4, same subject ~0.8-0.95) instead of
the near-orthogonal vectors uniform random data gives, which would make ANN look harder and
exact search no different. Queries are new points of the same subjects ("new photos of known
kinds"), never in the index. Recall@10 is against exact (flat) search in the same run.

Timings are single-query latencies (a user's search), p50/p99 over the queries, on the
engine's default threads (faiss: 1 thread below 20 queries, see faiss_engine.SMALL_BATCH);
ratios are against flat at the same N in the same run.

    python benchmarks/speed/search.py                                # 100k and 1M, 1280-d
    python benchmarks/speed/search.py --sizes 100000 --milvus 20000 --hnsw-budget 300

Milvus Lite is measured at --milvus N (default 20k): it is the test path for a Milvus server,
and inserting is slow enough (70 s per 100k measured before) that 1M would take most of an
hour. HNSW is skipped at a size whose build, extrapolated from the smaller size, exceeds
--hnsw-budget seconds.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from shiwu.index import FaissEngine, FaissSettings, IndexRow, Manifest, create_index  # noqa: E402
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared helpers
from bench_common import load_note, print_table, record_run  # noqa: E402

CHUNK = 50_000
K = 10


# -- data ------------------------------------------------------------------------------------

def real_embeddings(count: int, seed: int = 0) -> np.ndarray:
    from PIL import ImageEnhance, ImageOps

    from photo_embeddings import Embedder, jpeg, open_rgb, photo_files

    rng = np.random.default_rng(seed)
    photos = [open_rgb(p) for p in photo_files()]
    images = []
    for _ in range(count):
        image = photos[rng.integers(len(photos))]
        w, h = image.size
        scale = np.sqrt(rng.uniform(0.1, 1.0))
        cw, ch = max(32, int(w * scale)), max(32, int(h * scale * rng.uniform(0.75, 1.33)))
        cw, ch = min(cw, w), min(ch, h)
        left, top = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
        edit = image.crop((left, top, left + cw, top + ch))
        if rng.random() < 0.5:
            edit = ImageOps.mirror(edit)
        edit = ImageEnhance.Color(edit).enhance(rng.uniform(0.5, 1.5))
        edit = ImageEnhance.Brightness(edit).enhance(rng.uniform(0.7, 1.3))
        if rng.random() < 0.1:
            edit = ImageOps.grayscale(edit).convert("RGB")
        images.append(jpeg(edit, int(rng.integers(40, 96))))
    return Embedder()(images)


class EmbeddingLike:
    """Deterministic chunks of synthetic vectors around ``subjects`` subjects (see top)."""

    def __init__(self, real: np.ndarray, subjects: int, seed: int = 1, spread: float = 0.7,
                 isotropic: float = 0.1):
        rng = np.random.default_rng(seed)
        self.dimension = real.shape[1]
        mean = real.mean(axis=0)
        _, singular, directions = np.linalg.svd(real - mean, full_matrices=False)
        self.directions = (singular[:, None] * directions / np.sqrt(len(real))).astype(np.float32)
        a, b = rng.integers(len(real), size=(2, subjects))
        mix = rng.uniform(0, 1, size=(subjects, 1)).astype(np.float32)
        centres = mix * real[a] + (1 - mix) * real[b]
        self.centres = (centres / np.linalg.norm(centres, axis=1, keepdims=True)).astype(np.float32)
        self.spread, self.isotropic, self.seed = spread, isotropic, seed

    def chunk(self, number: int, size: int) -> np.ndarray:
        rng = np.random.default_rng((self.seed, number))
        subject = rng.integers(len(self.centres), size=size)
        noise = rng.standard_normal((size, len(self.directions)), dtype=np.float32) @ self.directions
        noise += rng.standard_normal((size, self.dimension), dtype=np.float32) * (
            self.isotropic / np.sqrt(self.dimension))
        points = self.centres[subject] + self.spread * noise
        return points / np.linalg.norm(points, axis=1, keepdims=True)

    def chunks(self, total: int):
        for number, start in enumerate(range(0, total, CHUNK)):
            size = min(CHUNK, total - start)
            yield np.arange(start, start + size, dtype=np.int64), self.chunk(number, size)


# -- measuring -------------------------------------------------------------------------------

def latencies(search, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    search(queries[:1], K)  # warm up: first-touch of the index pages
    times, found = [], []
    for query in queries:
        start = time.perf_counter()
        _, ids = search(query[None, :], K)
        times.append(time.perf_counter() - start)
        found.append(ids[0])
    return np.array(times) * 1e3, np.array(found)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth)]))


ROWS: list[dict] = []


def report(n, engine, params, build_s, times, found, truth, flat_p50, note=""):
    row = dict(n=n, engine=engine, params=params, build_s=build_s,
               rate=n / build_s if build_s else float("nan"),
               p50=float(np.percentile(times, 50)), p99=float(np.percentile(times, 99)),
               recall=recall(found, truth), note=note)
    row["ratio"] = row["p50"] / flat_p50 if flat_p50 else 1.0
    ROWS.append(row)
    print(f"  {engine:12} {params:22} build {build_s:7.1f} s ({row['rate']:9.0f}/s)  "
          f"p50 {row['p50']:7.2f} ms  p99 {row['p99']:7.2f} ms  recall@10 {row['recall']:.3f}  "
          f"x{row['ratio']:.2f} of flat {note}", flush=True)
    return row


def faiss_engine(data, n, settings):
    start = time.perf_counter()
    engine = FaissEngine.build(data.dimension, settings, n, data.chunks(n))
    return engine, time.perf_counter() - start


def measure_size(data, n, queries, args, hnsw_rate):
    print(f"\nN = {n:,} x {data.dimension}-d", flush=True)
    flat, build = faiss_engine(data, n, FaissSettings(kind="flat"))
    truth = flat.search(queries, K)[1]  # exact: the reference for recall
    times, found = latencies(flat.search, queries)
    flat_p50 = float(np.percentile(times, 50))
    report(n, "faiss flat", "exact, 1 thread", build, times, found, truth, flat_p50)
    flat.settings = FaissSettings(kind="flat", threads=os.cpu_count())
    times, found = latencies(flat.search, queries)
    report(n, "faiss flat", f"exact, {os.cpu_count()} threads", build, times, found, truth, flat_p50)
    del flat
    gc.collect()

    for nlist in args.nlists or [FaissSettings(kind="ivf").structure(n, data.dimension)["nlist"]]:
        ivf, build = faiss_engine(data, n, FaissSettings(kind="ivf", nlist=nlist))
        for nprobe in args.nprobes:
            ivf.apply_query_parameters(FaissSettings(kind="ivf", nlist=nlist, nprobe=nprobe))
            times, found = latencies(ivf.search, queries)
            report(n, "faiss IVF", f"nlist {nlist} nprobe {nprobe}", build, times, found, truth,
                   flat_p50)
        del ivf
        gc.collect()

    estimate = n / hnsw_rate if hnsw_rate else 0
    if estimate > args.hnsw_budget:
        print(f"  faiss HNSW   skipped: {estimate:.0f} s to build at the {hnsw_rate:.0f}/s "
              f"measured at the smaller size, over --hnsw-budget {args.hnsw_budget:.0f} s")
    else:
        hnsw, build = faiss_engine(data, n, FaissSettings(kind="hnsw", hnsw_m=args.hnsw_m))
        hnsw_rate = n / build
        for ef in args.efs:
            hnsw.apply_query_parameters(FaissSettings(kind="hnsw", ef_search=ef))
            times, found = latencies(hnsw.search, queries)
            report(n, "faiss HNSW", f"M {args.hnsw_m} efSearch {ef}", build, times, found, truth,
                   flat_p50)
        del hnsw
        gc.collect()
    return hnsw_rate


def measure_local_index(data, n, queries):
    """The real storage path: SQLite rows (one transaction per 1000) and the faiss file."""
    print(f"\nlocal index folder, N = {n:,}: SQLite rows + derived vectors.faiss", flush=True)
    folder = tempfile.mkdtemp(prefix="shiwu-bench-index-")
    index = create_index(os.path.join(folder, "index"), Manifest(model="bench", dimension=data.dimension))
    start = time.perf_counter()
    for ids, vectors in data.chunks(n):
        for s in range(0, len(ids), 1000):
            rows = [IndexRow(f"photo{i}.jpg", f"/photos/photo{i}.jpg", 100_000, 1, "bench", "猫", 0.5)
                    for i in ids[s:s + 1000]]
            index.upsert(rows, vectors[s:s + 1000])
    upsert = time.perf_counter() - start
    start = time.perf_counter()
    index.flush()
    flush = time.perf_counter() - start
    index.close()
    from shiwu.index import open_index
    start = time.perf_counter()
    index = open_index(os.path.join(folder, "index"))
    index.search(queries[:1], K)
    load = time.perf_counter() - start
    times = []
    for query in queries:
        t = time.perf_counter()
        index.search(query, K)
        times.append(time.perf_counter() - t)
    size = sum(os.path.getsize(os.path.join(folder, "index", f))
               for f in os.listdir(os.path.join(folder, "index")))
    print(f"  upsert {n / upsert:,.0f} rows/s; flush (build + write vectors.faiss) {flush:.1f} s; "
          f"open + first search (SHA-256 check, load) {load:.2f} s; Index.search p50 "
          f"{np.percentile(times, 50) * 1e3:.2f} ms (rows included); folder {size / 2**20:.0f} MiB")
    index.close()
    import shutil
    shutil.rmtree(folder)


def measure_milvus(data, n, queries):
    print(f"\nMilvus Lite, N = {n:,} (FLAT index, Strong consistency)", flush=True)
    flat, _ = faiss_engine(data, n, FaissSettings(kind="flat"))
    truth = flat.search(queries, K)[1]
    times, found = latencies(flat.search, queries)
    flat_p50 = float(np.percentile(times, 50))
    report(n, "faiss flat", "exact, 1 thread", 0.0, times, found, truth, flat_p50)
    folder = tempfile.mkdtemp(prefix="shiwu-bench-milvus-")
    index = create_index(os.path.join(folder, "bench.db"), Manifest(model="bench", dimension=data.dimension))
    start = time.perf_counter()
    for ids, vectors in data.chunks(n):
        rows = [IndexRow(f"photo{i}.jpg", f"/photos/photo{i}.jpg", 100_000, 1, "bench", "猫", 0.5)
                for i in ids]
        index.upsert(rows, vectors)
    index.counts()  # Strong: the rows are searchable from here on
    build = time.perf_counter() - start
    id_of = {}
    for ids, _ in data.chunks(n):
        id_of.update({IndexRow("", f"/photos/photo{i}.jpg", 0, 0).id: int(i) for i in ids})
    def search(q, k):
        scores, found = index.search_ids(q, k)
        return scores, np.vectorize(lambda x: id_of.get(int(x), -1))(found)
    times, found = latencies(search, queries)
    report(n, "Milvus Lite", "FLAT", build, times, found, truth, flat_p50)
    index.close()
    import shutil
    shutil.rmtree(folder, ignore_errors=True)


def measure_gallery(real, examples: int, queries_n: int):
    print(f"\ngallery: kNN over {examples:,} example vectors, single queries", flush=True)
    for dimension in (512, 1280, 2048):
        rng = np.random.default_rng(dimension)
        if dimension == real.shape[1]:
            base = real
        else:  # other models' widths: the same construction on a random projection of real ones
            base = np.abs(real @ rng.standard_normal((real.shape[1], dimension)).astype(np.float32))
            base /= np.linalg.norm(base, axis=1, keepdims=True)
        data = EmbeddingLike(base, subjects=max(1, examples // 5), seed=dimension)
        vectors = data.chunk(0, examples)
        queries = data.chunk(1, queries_n)
        engine = FaissEngine.from_vectors(vectors)
        def numpy_search(q, k, vectors=vectors):
            scores = vectors @ q[0]
            top = np.argpartition(-scores, k)[:k]
            return None, top[np.argsort(-scores[top])][None, :]
        for name, search in (("faiss flat", engine.search), ("numpy", numpy_search)):
            times, _ = latencies(search, queries)
            print(f"  {dimension:5d}-d {name:11} p50 {np.percentile(times, 50):6.3f} ms  "
                  f"p99 {np.percentile(times, 99):6.3f} ms", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--real", type=int, default=1000, help="real embeddings to model on")
    parser.add_argument("--per-subject", type=int, default=50, help="vectors per subject")
    parser.add_argument("--nlists", type=lambda s: [int(x) for x in s.split(",")], default=None)
    parser.add_argument("--nprobes", type=lambda s: [int(x) for x in s.split(",")],
                        default=[8, 16, 32, 64])
    parser.add_argument("--efs", type=lambda s: [int(x) for x in s.split(",")], default=[32, 64, 128])
    parser.add_argument("--hnsw-m", type=int, default=32)
    parser.add_argument("--hnsw-budget", type=float, default=600)
    parser.add_argument("--milvus", type=int, default=20_000)
    parser.add_argument("--local", type=int, default=100_000, help="rows for the index-folder test")
    parser.add_argument("--gallery", type=int, default=10_000)
    args = parser.parse_args()

    start = time.perf_counter()
    real = real_embeddings(args.real)
    print(f"{len(real)} real embeddings in {time.perf_counter() - start:.0f} s; "
          f"cosine between them: p50 {np.median(real @ real.T):.2f}", flush=True)
    sizes = [int(s) for s in args.sizes.split(",")]
    hnsw_rate = 0.0
    for n in sizes:
        data = EmbeddingLike(real, subjects=max(1, n // args.per_subject))
        queries = np.concatenate([data.chunk(10_000 + i, 1) for i in range(args.queries)])
        if n == sizes[0]:
            sample = data.chunk(0, min(n, CHUNK))
            neighbour = np.sort(queries @ sample.T, axis=1)[:, -K:]
            print(f"synthetic: cosine between random points p50 "
                  f"{np.median(sample[:1000] @ sample[1000:2000].T):.2f}; a query's 1st / 10th "
                  f"nearest among {len(sample):,}: p50 {np.median(neighbour[:, -1]):.2f} / "
                  f"{np.median(neighbour[:, 0]):.2f}")
        hnsw_rate = measure_size(data, n, queries, args, hnsw_rate)
    data = EmbeddingLike(real, subjects=max(1, args.milvus // args.per_subject))
    queries = np.concatenate([data.chunk(10_000 + i, 1) for i in range(args.queries)])
    if args.milvus:
        measure_milvus(data, args.milvus, queries[:50])
    if args.local:
        data = EmbeddingLike(real, subjects=max(1, args.local // args.per_subject))
        measure_local_index(data, args.local, queries)
    if args.gallery:
        measure_gallery(real, args.gallery, args.queries)

    print()
    print_table(["N", "engine", "parameters", "build s", "build vectors/s", "p50 ms", "p99 ms", "recall@10", "p50 / flat"],
                [[f"{r['n']:,}", r["engine"], r["params"], f"{r['build_s']:.1f}", f"{r['rate']:,.0f}",
                  f"{r['p50']:.2f}", f"{r['p99']:.2f}", f"{r['recall']:.3f}", f"{r['ratio']:.2f}"] for r in ROWS])
    print(f"\ntotal {time.perf_counter() - start:.0f} s; cores {os.cpu_count()}{load_note()}")


if __name__ == "__main__":
    sys.exit(record_run("search", main))
