"""How close does `shiwu batch` come to the model's own speed, on this machine?

For 640x480 photos and for 12-megapixel JPEGs (generated from the test photos, with grain so
they compress like real camera files), this measures in one run:

- pure inference: images/s of the same backend and threads on ready-made batches (no decoding,
  no files): the ceiling;
- decode + preprocess: milliseconds per image on one core (JPEG draft decoding included);
- `shiwu batch`: images/s of the real command in a subprocess, after start-up (its summary's
  ``steady_images_per_second``: model load and the first batch are left out, as a million-image
  run would).

and prints a table with the ratios. Goals: batch >= 80% of pure inference; a 12 MP JPEG costs at
most 2x a 640x480 one. Other processes on the machine make every number noisy: run it twice.

    python benchmarks/batch_throughput.py                       # backend auto, default settings
    python benchmarks/batch_throughput.py --backend onnxruntime --threads 1,2 --workers 1,2
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = sorted((ROOT / "tests" / "data").glob("*.jpg"))
SIZES = {"640x480": (640, 480), "12 MP": (4000, 3000)}


def make_images(folder: Path, size: tuple[int, int], count: int, unique: int = 6) -> list[Path]:
    """``count`` JPEGs of ``size``: ``unique`` different photos with grain, copied round-robin."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    originals = []
    for i, source in enumerate(PHOTOS[:unique]):
        image = Image.open(source).convert("RGB").resize(size, Image.Resampling.BICUBIC)
        pixels = np.asarray(image, dtype=np.int16)
        grain = rng.integers(-6, 7, size=pixels.shape, dtype=np.int16)
        image = Image.fromarray(np.clip(pixels + grain, 0, 255).astype(np.uint8))
        path = folder / f"orig_{i}.jpg"
        image.save(path, quality=92)
        originals.append(path)
    paths = []
    for i in range(count):
        path = folder / f"img_{i:05d}.jpg"
        shutil.copyfile(originals[i % len(originals)], path)
        paths.append(path)
    for path in originals:
        path.unlink()
    return paths


def decode_ms(paths: list[Path], preprocessing) -> float:
    from shiwu.batch.local import decode_batch

    decode_batch(paths[:2], preprocessing)  # warm-up
    sample = paths[: min(len(paths), 24)]
    start = time.perf_counter()
    decode_batch(sample, preprocessing)
    return (time.perf_counter() - start) / len(sample) * 1e3


def pure_inference(recognizer, batch_size: int, images: int) -> float:
    """Images/s of ``recognizer.predict_arrays`` (model + top-k) on ready batches."""
    size = recognizer.preprocessing.size
    batch = np.random.default_rng(0).standard_normal((batch_size, 3, size, size), dtype=np.float32)
    recognizer.predict_arrays(batch, 5)
    recognizer.predict_arrays(batch, 5)
    done = 0
    start = time.perf_counter()
    while done < images:
        recognizer.predict_arrays(batch, 5)
        done += batch_size
    return done / (time.perf_counter() - start)


def shiwu_batch(folder: Path, out: Path, args, threads: int, workers: int | None) -> dict:
    command = [sys.executable, "-m", "shiwu", "batch", str(folder), "-o", str(out), "--overwrite",
               "-q", "--json", "--backend", args.backend, "--batch-size", str(args.batch_size),
               "--threads", str(threads)]
    if args.model:
        command += ["--model", args.model]
    if workers is not None:
        command += ["--workers", str(workers)]
    run = subprocess.run(command, capture_output=True, text=True, encoding="utf-8")
    if run.returncode != 0:
        raise SystemExit(f"shiwu batch failed ({run.returncode}):\n{run.stderr}")
    return json.loads(run.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--model", default=None)
    parser.add_argument("--threads", default=None,
                        help="comma-separated inference threads to try (default: shiwu's default)")
    parser.add_argument("--workers", default=None,
                        help="comma-separated decode processes to try (default: shiwu's default)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--images", type=int, default=256, help="640x480 images (default 256)")
    parser.add_argument("--images-12mp", type=int, default=128, help="12 MP images (default 128)")
    args = parser.parse_args()

    from shiwu import Recognizer
    from shiwu.batch.local import default_workers
    from shiwu.cpu import default_threads

    thread_options = [int(t) for t in args.threads.split(",")] if args.threads else [default_threads()]
    worker_options = [int(w) for w in args.workers.split(",")] if args.workers else [None]
    workdir = Path(tempfile.mkdtemp(prefix="shiwu-batch-bench-"))
    try:
        folders = {}
        for name, size in SIZES.items():
            count = args.images if name == "640x480" else args.images_12mp
            folder = workdir / name.replace(" ", "")
            paths = make_images(folder, size, count)
            folders[name] = (folder, paths)
        megabytes = {name: paths[0].stat().st_size / 2**20 for name, (_, paths) in folders.items()}

        rows = []
        for threads in thread_options:
            recognizer = Recognizer(args.model, backend=args.backend, threads=threads,
                                    batch_size=args.batch_size)
            backend = f"{recognizer.backend.name} {recognizer.backend.precision}"
            ceiling = pure_inference(recognizer, args.batch_size, max(args.images, 4 * args.batch_size))
            decode = {name: decode_ms(paths, recognizer.preprocessing)
                      for name, (_, paths) in folders.items()}
            del recognizer
            for workers in worker_options:
                for name, (folder, _) in folders.items():
                    summary = shiwu_batch(folder, workdir / "out.jsonl", args, threads, workers)
                    rows.append({
                        "images": name, "backend": backend, "threads": threads,
                        "workers": workers if workers is not None else default_workers(),
                        "pure": ceiling, "batch": summary["steady_images_per_second"],
                        "wall": summary["images_per_second"], "decode_ms": decode[name],
                        "mb": megabytes[name], "n": summary["done"],
                    })
                    print(f"  measured {name}: threads {threads}, workers {rows[-1]['workers']}: "
                          f"{rows[-1]['batch']:.1f} images/s", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print()
    print(f"shiwu batch vs pure inference (batch size {args.batch_size}; "
          f"640x480 JPEG {megabytes['640x480']:.2f} MB, 12 MP JPEG {megabytes['12 MP']:.2f} MB)")
    header = (f"{'images':<8} {'backend':<18} {'threads':>7} {'workers':>7} {'pure inf/s':>10} "
              f"{'batch img/s':>11} {'ratio':>6} {'wall img/s':>10} {'decode ms':>9}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['images']:<8} {r['backend']:<18} {r['threads']:>7} {r['workers']:>7} "
              f"{r['pure']:>10.1f} {r['batch']:>11.1f} {r['batch'] / r['pure']:>6.0%} "
              f"{r['wall']:>10.1f} {r['decode_ms']:>9.2f}")
    print()
    for threads in thread_options:
        for workers in {r["workers"] for r in rows if r["threads"] == threads}:
            pair = {r["images"]: r for r in rows if r["threads"] == threads and r["workers"] == workers}
            small, large = pair["640x480"], pair["12 MP"]
            print(f"threads {threads}, workers {workers}: 12 MP costs "
                  f"{small['batch'] / large['batch']:.2f}x a 640x480 image in shiwu batch "
                  f"(decode alone {large['decode_ms'] / small['decode_ms']:.2f}x); "
                  f"batch keeps {small['batch'] / small['pure']:.0%} (640x480) and "
                  f"{large['batch'] / large['pure']:.0%} (12 MP) of pure inference")
    print("wall img/s includes start-up (model load, first batch); batch img/s is after it.")


if __name__ == "__main__":
    main()
