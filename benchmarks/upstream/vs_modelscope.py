"""The official ModelScope GeneralRecognitionPipeline against shiwu, on the 万物识别 model.

Both sides load the same model directory (by default a SYNTHETIC 54,092-class one in the real
format, written on first use by ``python -m shiwu.models.synthetic``: the real weights cannot be
downloaded here; pass ``--model-dir`` to use a real download) and recognise the same photos one
at a time, decode included. Each side runs in its own fresh process, so that its load time and
peak RSS are its own. The script checks that the top-1 class index is the same on every photo
and that the preprocessed input tensors agree, then prints latency, load time and peak RSS for
both sides and the ratios.

The official side needs ``modelscope`` with ``torchvision`` and ``opencv``, and torchvision
needs the CUDA build of torch, so run it from a separate virtualenv (not part of CI)::

    python3 -m venv /tmp/venv-ms && . /tmp/venv-ms/bin/activate
    pip install torch==2.14.1 torchvision==0.29.1          # ~5.5 GB
    pip install modelscope==1.40.2 opencv-python-headless && pip install -e .
    python benchmarks/upstream/vs_modelscope.py [--repeat 2] [--backends torch,onnxruntime] [--images DIR]

Without modelscope it measures shiwu alone and says so.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared helper
from bench_common import ROOT, record_run, peak_rss_mb, current_rss_mb  # noqa: E402

DEFAULT_DIR = Path(tempfile.gettempdir()) / "shiwu-synthetic-cv_resnest101_general_recognition"


def timed_run(predict, paths, repeat):
    """top-1 per photo, per-image wall and CPU seconds; the first two calls are warm-up.

    CPU seconds (all threads) are reported beside wall time because they hold up better on a
    machine that other work shares: wall time then measures the neighbours as much as the model.
    """
    for path in paths[:2]:
        predict(path)
    top1, times, cpu = {}, [], []
    for _ in range(repeat):
        for path in paths:
            start, start_cpu = time.perf_counter(), time.process_time()
            top1[str(path)] = predict(path)
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
    return top1, times, cpu


# ----------------------------------------------------------------------------- the two sides
# Each runs in a child process: `python vs_modelscope.py --child official|shiwu ...`.

def child_official(model_dir: Path, paths, repeat: int, backends: list[str]) -> dict:
    import torch
    from modelscope.pipelines.cv.general_recognition_pipeline import GeneralRecognitionPipeline

    labels = [line.split("\t")[1] for line in
              (model_dir / "meta_info.txt").read_text(encoding="utf-8").splitlines(keepends=True)]
    index_of = {label: i for i, label in enumerate(labels)}  # labels keep their "\n", like the pipeline's

    rss_before = current_rss_mb()
    start = time.perf_counter()
    # Constructed directly: pipeline() on modelscope 1.40 passes trust_remote_code, which this
    # class's __init__(model, device) does not accept.
    pipe = GeneralRecognitionPipeline(model=str(model_dir), device="cpu")
    load = time.perf_counter() - start
    rss_loaded = current_rss_mb()

    def predict(path):
        result = pipe(str(path))
        return index_of[result["labels"][0]]

    top1, times, cpu = timed_run(predict, paths, repeat)
    peak = peak_rss_mb()  # before anything else is loaded into this process
    inputs = {str(p): pipe.preprocess(str(p))["img"].numpy().tolist() for p in paths}
    return {"name": f"ModelScope GeneralRecognitionPipeline (torch {torch.__version__} eager)",
            "load_s": load, "times": times, "cpu": cpu, "top1": top1, "inputs": inputs,
            "rss_before_load_mb": rss_before, "rss_loaded_mb": rss_loaded, "peak_rss_mb": peak,
            "threads": torch.get_num_threads(),
            "interleaved": interleaved(pipe, model_dir, paths, repeat, backends)}


def interleaved(pipe, model_dir: Path, paths, repeat: int, backends: list[str]) -> dict:
    """The official pipeline and shiwu alternating photo by photo in one process: the fairest
    latency comparison on a machine shared with other work, whose load drifts between the
    separate processes above. torch eager at 1 thread (the same work, so ~1.0x expected) and
    every requested backend at 2 threads. Median seconds per image."""
    import torch

    from shiwu import Recognizer

    result = {}
    for threads, names in ((1, ["torch"]), (2, backends)):
        torch.set_num_threads(threads)
        sides = {"official": lambda p: pipe(str(p))}
        for entry in names:
            backend, _, precision = entry.partition(":")
            try:
                recognizer = Recognizer(str(model_dir), backend=backend, precision=precision or "fp32",
                                        threads=threads, batch_size=1)
            except Exception as exc:  # a backend this venv lacks: say so, compare the rest
                print(f"interleaved: {entry} unavailable here: {exc}", file=sys.stderr)
                continue
            sides[f"shiwu {recognizer.backend.name} {recognizer.backend.precision}"] = (
                lambda p, r=recognizer: r.predict(p))
        torch.set_num_threads(threads)
        for side in sides.values():
            side(paths[0])
        wall = {k: [] for k in sides}
        for _ in range(repeat):
            for path in paths:
                for name, side in sides.items():
                    start = time.perf_counter()
                    side(path)
                    wall[name].append(time.perf_counter() - start)
        result[str(threads)] = {k: statistics.median(v) for k, v in wall.items()}
    return result


def child_shiwu(model_dir: Path, paths, repeat: int, backend: str, precision: str,
                threads: int | None) -> dict:
    rss_before = current_rss_mb()
    start = time.perf_counter()
    from shiwu import Recognizer

    recognizer = Recognizer(str(model_dir), backend=backend, precision=precision, threads=threads,
                            batch_size=1)
    load = time.perf_counter() - start
    rss_loaded = current_rss_mb()

    def predict(path):
        return recognizer.predict(path, topk=5)[0].index

    top1, times, cpu = timed_run(predict, paths, repeat)
    import torch

    return {"name": f"shiwu ({recognizer.backend.name}, {recognizer.backend.precision}, torch {torch.__version__})",
            "load_s": load, "times": times, "cpu": cpu, "top1": top1,
            "rss_before_load_mb": rss_before, "rss_loaded_mb": rss_loaded, "peak_rss_mb": peak_rss_mb(),
            "threads": getattr(recognizer.backend, "threads", None)}


def run_child(args, side: str, extra: list[str], python: str = sys.executable) -> dict | None:
    command = [python, __file__, "--child", side, "--model-dir", str(args.model_dir),
               "--images", str(args.images), "--repeat", str(args.repeat), *extra]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        print(f"--- {side} {' '.join(extra)} failed (exit {done.returncode}):\n{done.stderr[-3000:]}",
              file=sys.stderr)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- report

def shiwu_inputs(model_dir: Path, paths) -> dict:
    """shiwu's preprocessed tensors for the same photos (its loader: full decode for this model)."""
    from shiwu.images import load_image
    from shiwu.models.registry import get_model

    pre = get_model(str(model_dir)).preprocessing
    return {str(p): pre(load_image(p, min_size=pre.decode_min_size)) for p in paths}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_DIR,
                        help=f"ModelScope model directory (default: synthetic, written if missing: {DEFAULT_DIR})")
    parser.add_argument("--images", type=Path, default=ROOT / "tests" / "data")
    parser.add_argument("--repeat", type=int, default=2, help="timed rounds over the photos (default 2)")
    parser.add_argument("--backends", default="torch",
                        help="shiwu backends, comma-separated backend[:precision] (default torch)")
    parser.add_argument("--threads", type=int, default=None, help="shiwu threads (default: its own)")
    parser.add_argument("--shiwu-python", action="append", default=[],
                        help="also run shiwu with this interpreter, e.g. a venv with the CPU build "
                             "of torch (repeatable; the current interpreter always runs)")
    parser.add_argument("--child", choices=["official", "shiwu"], help=argparse.SUPPRESS)
    parser.add_argument("--backend", default="torch", help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    args = parser.parse_args()
    paths = sorted(p for p in args.images.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))

    if args.child == "official":
        print(json.dumps(child_official(args.model_dir, paths, args.repeat, args.backends.split(",")),
                         ensure_ascii=False))
        return 0
    if args.child == "shiwu":
        print(json.dumps(child_shiwu(args.model_dir, paths, args.repeat, args.backend,
                                     args.precision, args.threads), ensure_ascii=False))
        return 0

    if not (args.model_dir / "pytorch_model.pt").is_file():
        print(f"writing a SYNTHETIC 54,092-class model to {args.model_dir} (once) ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "shiwu.models.synthetic", str(args.model_dir)], check=True)

    import importlib.util
    have_official = all(importlib.util.find_spec(m) for m in ("modelscope", "torchvision", "cv2"))
    official = run_child(args, "official", ["--backends", args.backends]) if have_official else None
    if not have_official:
        print("ModelScope's pipeline is not installed here (needs modelscope, torchvision, "
              "opencv: see this file's docstring); measuring shiwu alone.\n", file=sys.stderr)

    runs = []
    for entry in args.backends.split(","):
        backend, _, precision = entry.partition(":")
        extra = ["--backend", backend, "--precision", precision or "fp32"]
        if args.threads:
            extra += ["--threads", str(args.threads)]
        for python in [sys.executable, *args.shiwu_python]:
            if backend not in ("torch", "auto"):
                # Export once beforehand (cached by shiwu), so the timed process measures a
                # normal start, not the one-time export.
                run_child(args, "shiwu", extra + ["--repeat", "0"], python)
            result = run_child(args, "shiwu", extra, python)
            if result:
                if python != sys.executable:
                    result["name"] += f" [{Path(python).parent.parent.name}]"
                runs.append(result)

    config = json.loads((args.model_dir / "configuration.json").read_text(encoding="utf-8"))
    classes = sum(1 for _ in open(args.model_dir / "meta_info.txt", encoding="utf-8"))
    kind = "SYNTHETIC (random weights)" if config.get("synthetic") else "real"
    print(f"{kind} ResNeSt-101, {classes:,} classes, {args.model_dir}")
    print(f"{len(paths)} photos x {args.repeat} rounds, one image per call, decode included, "
          f"each side in a fresh process; {os.cpu_count()} CPUs\n")

    failed = False
    if official:
        import numpy as np

        ours = shiwu_inputs(args.model_dir, paths)
        worst = max(float(np.abs(np.asarray(official["inputs"][str(p)], dtype=np.float32) - ours[str(p)]).max())
                    for p in paths)
        print(f"input tensors, official vs shiwu: max abs difference {worst:.2e} over {len(paths)} photos")
        for run in runs:
            differ = [Path(p).name for p in official["top1"] if official["top1"][p] != run["top1"][p]]
            same = len(official["top1"]) - len(differ)
            print(f"top-1 index, {run['name']}: same on {same}/{len(official['top1'])} photos"
                  + (f"; DIFFERENT on {', '.join(differ)}" if differ else ""))
            failed |= bool(differ)
        print()

    rows = ([official] if official else []) + runs
    base = official or (runs[0] if runs else None)
    if base is None:
        print("nothing ran", file=sys.stderr)
        return 1
    width = max(len(row["name"]) for row in rows)
    header = (f"| {'side':<{width}} | {'median ms':>9} | {'p95 ms':>7} | {'CPU ms':>6} | {'load s':>6} | "
              f"{'peak RSS MiB':>12} | {'speed-up':>8} | {'CPU ratio':>9} | {'RSS ratio':>9} |")
    print(header)
    print("|" + "|".join("-" * len(c) for c in header.split("|")[1:-1]) + "|")
    base_median, base_cpu = statistics.median(base["times"]), statistics.median(base["cpu"])
    for row in rows:
        median, cpu = statistics.median(row["times"]), statistics.median(row["cpu"])
        p95 = sorted(row["times"])[int(0.95 * (len(row["times"]) - 1))]
        print(f"| {row['name']:<{width}} | {median * 1e3:9.1f} | {p95 * 1e3:7.1f} | {cpu * 1e3:6.0f} | "
              f"{row['load_s']:6.2f} | {row['peak_rss_mb']:12.0f} | {base_median / median:7.2f}x | "
              f"{base_cpu / cpu:8.2f}x | {row['peak_rss_mb'] / base['peak_rss_mb']:8.2f}x |")
    if official and official.get("interleaved"):
        print("\nInterleaved in one process (official, shiwu, official, shiwu ... photo by photo; "
              "robust to the load of a shared machine), median ms per image:")
        for threads, medians in sorted(official["interleaved"].items()):
            reference = medians["official"]
            cells = [f"official {reference * 1e3:.1f}"] + [
                f"{name} {value * 1e3:.1f} ({reference / value:.2f}x)"
                for name, value in medians.items() if name != "official"]
            print(f"  {threads} thread(s): " + ", ".join(cells))
    if official:
        print("\nspeed-up = official median wall time / this one; CPU ratio = the same for CPU time "
              "(all threads) per image;\nRSS ratio = this peak RSS / official. load s: constructing "
              "the pipeline / Recognizer. Peak RSS: ru_maxrss of each side's own process.")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(record_run("vs_modelscope", main))
