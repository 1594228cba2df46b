"""How close does `shiwu batch` come to the model's own speed, on this machine?

For 640x480 photos and for 12-megapixel JPEGs (generated from the test photos, with grain so
they compress like real camera files: about 2 MB), this measures, in one run:

- pure inference: the same backend and threads on ready-made batches (no files, no decoding),
  the faster of one model with all threads and two models sharing them: the ceiling;
- decode + preprocess alone: CPU milliseconds per image (JPEG draft decoding included);
- `shiwu batch`, the real command in a subprocess: images/s and CPU milliseconds per image of
  the whole process tree (decoders included), both taken as the difference between a short
  and a long run, so that start-up and filling and draining the pipeline cancel out.

Two ratios come out. The wall-clock ratio (batch images/s over pure images/s) is the goal's
number, but on a machine shared with other work it swings with their load, which the table
shows (cores busy with other processes while each part ran). The CPU ratio (pure CPU ms per
image over batch CPU ms per image) hardly depends on that load: it is the share of the
pipeline's CPU that goes into inference, hence the wall-clock ratio the pipeline reaches on an
otherwise idle machine, where it keeps every core busy.

Goals (issue 6): batch >= 80% of pure inference; a 12 MP JPEG costs at most 2x a 640x480 one.

    python benchmarks/speed/batch_throughput.py                        # backend auto, shiwu's defaults
    python benchmarks/speed/batch_throughput.py --backend onnxruntime --workers 1,2 --streams 1,2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared helper
from bench_common import ROOT, record_run  # noqa: E402

PHOTOS = sorted((ROOT / "tests" / "data").glob("*.jpg"))
SIZES = {"640x480": (640, 480), "12 MP": (4000, 3000)}
SHORT_RUN = 64  # images in the short run; its cost (start-up + 64 images) is subtracted


def make_images(folder: Path, size: tuple[int, int], count: int, unique: int = 6) -> list[Path]:
    """``count`` JPEGs of ``size``: ``unique`` different photos with grain, linked round-robin."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    originals = []
    for i, source in enumerate(PHOTOS[:unique]):
        image = Image.open(source).convert("RGB").resize(size, Image.Resampling.BICUBIC)
        pixels = np.asarray(image, dtype=np.int16)
        grain = rng.integers(-6, 7, size=pixels.shape, dtype=np.int16)
        image = Image.fromarray(np.clip(pixels + grain, 0, 255).astype(np.uint8))
        path = folder.parent / f"{folder.name}-orig_{i}.jpg"
        image.save(path, quality=92)
        originals.append(path)
    paths = []
    for i in range(count):
        path = folder / f"img_{i:05d}.jpg"
        os.link(originals[i % len(originals)], path)  # same bytes, read from the page cache
        paths.append(path)
    return paths


def machine_busy_seconds() -> float:
    """CPU-seconds the whole machine has spent busy since boot (all processes)."""
    with open("/proc/stat") as handle:
        fields = [int(v) for v in handle.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def decode_ms(paths: list[Path], preprocessing) -> float:
    """CPU ms per image to decode and preprocess (CPU time: other load does not inflate it)."""
    from shiwu.batch.local import decode_batch

    decode_batch(paths[:2], preprocessing)  # warm-up
    sample = paths[: min(len(paths), 24)]
    start = time.process_time()
    decode_batch(sample, preprocessing)
    return (time.process_time() - start) / len(sample) * 1e3


def pure_inference(recognizers, batch_size: int, images: int) -> dict:
    """Images/s and CPU ms per image of ``predict_arrays`` (model + top-k) on ready batches;
    several recognizers run side by side in threads, as ``shiwu batch --streams`` does."""
    size = recognizers[0].preprocessing.size
    batch = np.random.default_rng(0).standard_normal((batch_size, 3, size, size), dtype=np.float32)
    for recognizer in recognizers:
        recognizer.predict_arrays(batch, 5)
        recognizer.predict_arrays(batch, 5)
    share = max(1, images // len(recognizers) // batch_size)

    def work(recognizer):
        for _ in range(share):
            recognizer.predict_arrays(batch, 5)

    done = share * batch_size * len(recognizers)
    wall, cpu, busy = time.perf_counter(), time.process_time(), machine_busy_seconds()
    with ThreadPoolExecutor(len(recognizers)) as pool:
        list(pool.map(work, recognizers))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    busy = machine_busy_seconds() - busy
    return {"rate": done / wall, "cpu_ms": cpu / done * 1e3, "others": max(0.0, busy - cpu) / wall}


def ceiling(args, threads: int, work: int) -> dict:
    """The best pure inference with ``threads`` threads in all: one model with all of them, or
    two models sharing them, whichever is faster here and now."""
    from shiwu import Recognizer

    best = None
    layouts = [(1, threads)] + ([(2, threads // 2)] if threads >= 2 else [])
    for streams, per in layouts:
        recognizers = [Recognizer(args.model, backend=args.backend, threads=per,
                                  batch_size=args.batch_size) for _ in range(streams)]
        result = pure_inference(recognizers, args.batch_size, work)
        result.update(layout=f"{streams}x{per} threads", recognizer=recognizers[0])
        print(f"  pure inference, {result['layout']}: {result['rate']:.1f} images/s, "
              f"{result['cpu_ms']:.2f} CPU ms per image (others busy: {result['others']:.2f} cores)",
              file=sys.stderr, flush=True)
        if best is None or result["rate"] > best["rate"]:
            best = result
        del recognizers
    return best


def shiwu_batch(folder: Path, out: Path, args, threads: int, workers, streams) -> dict:
    command = [sys.executable, "-m", "shiwu", "batch", str(folder), "-o", str(out), "--overwrite",
               "-q", "--json", "--backend", args.backend, "--batch-size", str(args.batch_size),
               "--threads", str(threads)]
    if args.model:
        command += ["--model", args.model]
    if workers is not None:
        command += ["--workers", str(workers)]
    if streams is not None:
        command += ["--streams", str(streams)]
    cpu, busy, wall = children_cpu_seconds(), machine_busy_seconds(), time.perf_counter()
    run = subprocess.run(command, capture_output=True, text=True, encoding="utf-8")
    wall = time.perf_counter() - wall
    cpu = children_cpu_seconds() - cpu
    busy = machine_busy_seconds() - busy
    if run.returncode != 0:
        raise SystemExit(f"shiwu batch failed ({run.returncode}):\n{run.stderr}")
    summary = json.loads(run.stdout)
    summary.update(cpu=cpu, others=max(0.0, busy - cpu) / wall)
    return summary


def options(text: str | None, default):
    return [int(v) for v in text.split(",")] if text else [default]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--model", default=None)
    parser.add_argument("--threads", default=None,
                        help="inference threads in all, comma-separated to compare (default: "
                             "shiwu's default, one per physical core)")
    parser.add_argument("--workers", default=None,
                        help="decode processes, comma-separated to compare (default: shiwu's)")
    parser.add_argument("--streams", default=None,
                        help="inference streams, comma-separated to compare (default: shiwu's)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--images", type=int, default=384, help="images per size (default 384)")
    args = parser.parse_args()
    if args.images <= SHORT_RUN:
        parser.error(f"--images must be more than {SHORT_RUN}")

    from shiwu.batch.local import default_workers, plan_streams
    from shiwu.cpu import default_threads

    workdir = Path(tempfile.mkdtemp(prefix="shiwu-batch-bench-"))
    rows = []
    try:
        folders = {}
        for name, size in SIZES.items():
            folder = workdir / name.replace(" ", "")
            paths = make_images(folder, size, args.images)
            short = workdir / (folder.name + "-short")
            short.mkdir()
            for path in paths[:SHORT_RUN]:
                os.link(path, short / path.name)
            folders[name] = (folder, short, paths)
        megabytes = {name: sum(p.stat().st_size for p in paths) / len(paths) / 2**20
                     for name, (_, _, paths) in folders.items()}

        for threads in options(args.threads, default_threads()):
            work = max(args.images, 4 * args.batch_size)
            before = ceiling(args, threads, work)
            recognizer = before.pop("recognizer")
            backend = f"{recognizer.backend.name} {recognizer.backend.precision}"
            decode = {name: decode_ms(paths, recognizer.preprocessing)
                      for name, (_, _, paths) in folders.items()}
            del recognizer
            measured = []
            for workers in options(args.workers, None):
                for streams in options(args.streams, None):
                    for name, (folder, short, _) in folders.items():
                        out = workdir / "out.jsonl"
                        small = shiwu_batch(short, out, args, threads, workers, streams)
                        full = shiwu_batch(folder, out, args, threads, workers, streams)
                        m = {
                            "images": name, "backend": backend, "threads": threads,
                            "workers": default_workers() if workers is None else workers,
                            "streams": plan_streams(threads, streams)[0],
                            # the long run minus the short one: start-up, filling and draining
                            # the pipeline cancel out, what is left is the steady state
                            "batch": (args.images - SHORT_RUN) / (full["seconds"] - small["seconds"]),
                            "wall": full["images_per_second"],
                            "batch_cpu_ms": (full["cpu"] - small["cpu"]) / (args.images - SHORT_RUN) * 1e3,
                            "batch_others": full["others"], "decode_ms": decode[name],
                        }
                        measured.append(m)
                        print(f"  shiwu batch {name}: threads {threads}, workers {m['workers']}, "
                              f"streams {m['streams']}: {m['batch']:.1f} images/s, "
                              f"{m['batch_cpu_ms']:.2f} CPU ms per image "
                              f"(others busy: {m['batch_others']:.2f} cores)", file=sys.stderr, flush=True)
            # The ceiling again after the batch runs, and the better of the two: other processes'
            # load only ever lowers it, so the better one is the closer to the truth.
            after = ceiling(args, threads, work)
            after.pop("recognizer")
            for m in measured:
                m["pure"] = max(before["rate"], after["rate"])
                m["pure_cpu_ms"] = min(before["cpu_ms"], after["cpu_ms"])
                m["pure_others"] = (before["others"] + after["others"]) / 2
                m["layout"] = before["layout"]
            rows += measured
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print()
    print(f"shiwu batch vs pure inference on {os.cpu_count()} CPUs (batch size {args.batch_size}, "
          f"{args.images} images per size; 640x480 JPEG {megabytes['640x480']:.2f} MB, "
          f"12 MP JPEG {megabytes['12 MP']:.2f} MB)")
    header = (f"{'images':<8} {'backend':<17} {'thr':>3} {'wrk':>3} {'str':>3} │ {'pure/s':>7} "
              f"{'batch/s':>7} {'wall ratio':>10} │ {'pure CPU':>8} {'decode':>6} {'batch CPU':>9} "
              f"{'CPU ratio':>9} │ {'others':>6}")
    print(header)
    print("─" * len(header))
    for r in rows:
        print(f"{r['images']:<8} {r['backend']:<17} {r['threads']:>3} {r['workers']:>3} "
              f"{r['streams']:>3} │ {r['pure']:>7.1f} {r['batch']:>7.1f} {r['batch'] / r['pure']:>10.0%} │ "
              f"{r['pure_cpu_ms']:>8.2f} {r['decode_ms']:>6.2f} {r['batch_cpu_ms']:>9.2f} "
              f"{r['pure_cpu_ms'] / r['batch_cpu_ms']:>9.0%} │ "
              f"{max(r['batch_others'], r['pure_others']):>6.2f}")
    print("thr/wrk/str: inference threads, decode processes, inference streams. pure/s, batch/s: "
          "images per second (pure: the better of before and after; batch: a long run minus a "
          "short one). CPU columns: CPU ms per image "
          "(decode: decoding and preprocessing alone). others: cores busy with other processes "
          "meanwhile (the larger of the two parts).")
    print()
    configs = sorted({(r["threads"], r["workers"], r["streams"]) for r in rows})
    for threads, workers, streams in configs:
        pair = {r["images"]: r for r in rows
                if (r["threads"], r["workers"], r["streams"]) == (threads, workers, streams)}
        small, large = pair["640x480"], pair["12 MP"]
        print(f"threads {threads}, workers {workers}, streams {streams} (ceiling: {small['layout']}):")
        for r in (small, large):
            print(f"  {r['images']}: batch keeps {r['batch'] / r['pure']:.0%} of pure inference "
                  f"by the clock, {r['pure_cpu_ms'] / r['batch_cpu_ms']:.0%} by CPU "
                  f"(goal 80%)")
        print(f"  a 12 MP JPEG costs {large['batch_cpu_ms'] / small['batch_cpu_ms']:.2f}x the CPU "
              f"of a 640x480 one in shiwu batch, {small['batch'] / large['batch']:.2f}x the time "
              f"(goal 2x; decoding alone {large['decode_ms'] / small['decode_ms']:.1f}x)")


if __name__ == "__main__":
    sys.exit(record_run("batch_throughput", main))
