"""Every backend and precision on this machine: model-only latency, throughput, GFLOP/s against
a GEMM ceiling measured in the same run, and top-1 agreement with torch fp32 on real photos.

    python benchmarks/speed/backends.py [--model efficientnet-lite0] [--size 224] [--threads 2]
                                  [--configs torch,torchscript,onnxruntime,openvino,openvino:bf16]

The ceiling is, per precision, the best large GEMM any runtime gives here (torch, ONNX Runtime,
OpenVINO: ``ceilings.py``; the torch matmul alone is not this CPU's limit: ONNX Runtime fp32 ran a
ResNeSt at 152% of it), next to the instruction set's nominal peak. A backend's GFLOP/s is the
model's work (torch's FlopCounterMode) divided by its batch-1 latency.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch


from shiwu.backends import BackendUnavailable, create_backend  # noqa: E402
from shiwu.bench import call_times  # noqa: E402  (the timing loop `shiwu bench` uses)
from shiwu.calibrate import top1_agreement, view_batch  # noqa: E402
from shiwu.images import load_image  # noqa: E402
from shiwu.models.registry import get_model  # noqa: E402
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared helper
from bench_common import ROOT, model_gflop, print_table, record_run, speedup  # noqa: E402
from ceilings import ceilings_in_child, isa_peaks  # noqa: E402

DEFAULT_CONFIGS = "torch,torchscript,onnxruntime,openvino,openvino:bf16,torch:bf16,openvino:int8,onnxruntime:int8"


def matmul_ceiling(dtype, n: int = 2048, rounds: int = 10) -> float:
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    best = float("inf")
    with torch.inference_mode():
        for _ in range(rounds):
            start = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best / 1e9


def latency(backend, batch: np.ndarray, seconds: float) -> list[float]:
    return call_times(lambda: backend.run(batch), seconds, warmup=3, min_calls=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--configs", default=DEFAULT_CONFIGS)
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per configuration")
    parser.add_argument("--images", type=Path, default=ROOT / "tests" / "data")
    args = parser.parse_args()

    spec = get_model(args.model)
    size = args.size or spec.preprocessing.size
    pre = spec.preprocessing.with_size(size)
    from shiwu.cpu import default_threads
    threads = args.threads or default_threads()
    torch.set_num_threads(threads)

    photos = sorted(p for p in args.images.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    photo_batch = pre.batch([load_image(p) for p in photos])
    views = view_batch(photos, pre, 16, seed=7)
    gflop = model_gflop(spec.build(size), size)
    ceilings = {"fp32": matmul_ceiling(torch.float32)}
    try:
        ceilings["bf16"] = matmul_ceiling(torch.bfloat16)
    except RuntimeError:
        pass
    for precision, by_runtime in ceilings_in_child(threads).items():
        ceilings[precision] = max([ceilings.get(precision, 0.0), *by_runtime.values()])

    reference = create_backend("torch", spec, size=size, threads=threads)
    ref_photos, ref_views = reference.run(photo_batch), reference.run(views)
    del reference

    rows = []
    one = photo_batch[:1]
    eight = np.repeat(photo_batch[:1], 8, axis=0)
    for entry in args.configs.split(","):
        name, _, precision = entry.partition(":")
        precision = precision or "fp32"
        try:
            backend = create_backend(name, spec, size=size, precision=precision, threads=threads)
        except BackendUnavailable as exc:
            rows.append((f"{name} {precision}", None, str(exc)))
            print(f"  {name} {precision}: not available: {exc}", file=sys.stderr)
            continue
        t1 = statistics.median(latency(backend, one, args.seconds))
        t8 = statistics.median(latency(backend, eight, args.seconds))
        agree_photos = top1_agreement(ref_photos, backend.run(photo_batch))
        agree_views = top1_agreement(ref_views, np.concatenate(
            [backend.run(views[i:i + 16]) for i in range(0, len(views), 16)]))
        rows.append((f"{name} {precision}", (t1, t8, agree_photos, agree_views, precision), None))
        print(f"  {name} {precision}: {t1 * 1e3:.2f} ms", file=sys.stderr)
        del backend
        gc.collect()

    base = next(r[1][0] for r in rows if r[1] and r[0] == "torch fp32")
    print(f"\n{spec.name} at {size}px, {gflop:.2f} GFLOP per image, {threads} threads; "
          f"ceiling (best GEMM of torch, onnxruntime, openvino): "
          + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in ceilings.items())
          + "; instruction-set peak: " + ", ".join(f"{k} {v:.0f}" for k, v in isa_peaks(threads).items()))
    print(f"top-1 agreement with torch fp32 on {len(photos)} photos and on {len(views)} views of them\n")
    table = []
    for label, data, error in rows:
        if data is None:
            table.append([label, f"not available: {error[:90]}"])
            continue
        t1, t8, agree_p, agree_v, precision = data
        achieved = gflop / t1
        ceiling = ceilings.get(precision)
        share = f"{achieved / ceiling:.0%}" if ceiling else "n/a"
        table.append([label, f"{t1 * 1e3:.2f}", speedup(base, t1), f"{8 / t8:.0f}", f"{achieved:.0f}", share,
                      f"{agree_p:.1%}", f"{agree_v:.1%}"])
    print_table(["backend, precision", "batch 1 ms", "vs torch fp32", "images/s at batch 8", "GFLOP/s",
                 "% of ceiling", "agreement (photos)", "agreement (views)"], table)

if __name__ == "__main__":
    sys.exit(record_run("backends", main))
