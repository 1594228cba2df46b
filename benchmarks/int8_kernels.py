"""ONNX Runtime int8 on this CPU: fused integer kernels, the graph run unfused, 7-bit weights.

Without VNNI (AVX2, or AVX-512 without VNNI), ONNX Runtime's fused int8 convolutions add pairs
of uint8 x int8 products in 16 bits (vpmaddubsw) and clip, so the same int8 model answers
differently than on a CPU with VNNI, where the shipped accuracy was measured. This script shows
what each way of running it gives here, against fp32 in the same run:

- ``fused``: ONNX Runtime's default, integer kernels;
- ``unfused``: what shiwu runs on CPUs without VNNI (``session.disable_quant_qdq``: weights
  dequantized once, activations rounded to their int8 levels, sums in float);
- ``7-bit fused``: the model quantized again with ``reduce_range`` (no clipping, coarser weights).

Columns: top-1 / top-5 on imagenet-dev (one photo per class, never copied here), the share of
the answers recorded with the shipped figures that this CPU gives again on the bundled check
views (the accuracy policy's reproduction check, floor 95%), and model-alone ms per photo at
batch 1 and 8 (each setting in its own process, rounds interleaved across them, medians). Usage:

    python benchmarks/int8_kernels.py [--photos ../shared/imagenet-dev] [--rounds 15] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/: bench_common, int8_accuracy
from bench_common import JsonWorker, call_seconds, print_table, record_run, serve_requests, speedup  # noqa: E402
from int8_accuracy import default_photos, labelled_photos  # noqa: E402

from shiwu.backends import export, policy, quantize  # noqa: E402
from shiwu.backends.quantize_onnx import quantize_onnx  # noqa: E402
from shiwu.backends.runtimes import cpu_lacks, fused_int8_saturates  # noqa: E402
from shiwu.cpu import cpu_flags, cpu_model  # noqa: E402
from shiwu.models.registry import get_model  # noqa: E402


def session(path: Path, threads: int, *, unfused: bool):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if unfused:
        options.add_session_config_entry("session.disable_quant_qdq", "1")
    run = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = run.get_inputs()[0].name
    return lambda batch: run.run(None, {name: batch})[0]


def logits_of(run, batch: np.ndarray, chunk: int = 50) -> np.ndarray:
    return np.concatenate([run(batch[i:i + chunk]) for i in range(0, len(batch), chunk)])


def worker(setting: str, path: str, threads: int) -> int:
    """One setting in its own process (idle ONNX Runtime threads of one session spin while
    another runs): answers {"batch": n, "calls": k} with ms per photo."""
    run = session(Path(path), threads, unfused=setting == "int8 unfused")
    views = policy.check_batch(get_model(None), 224)[:8].copy()

    def answer(request: dict | None) -> dict:
        if request is None:
            return {"ready": setting}
        batch = views[:request["batch"]]
        seconds = call_seconds(lambda: run(batch), request["calls"], warmup=3)
        return {"ms": sum(seconds) / len(seconds) / len(batch) * 1e3}

    return serve_requests(answer)


def interleaved_ms(paths: dict[str, Path], threads: int, rounds: int) -> dict[int, dict[str, float]]:
    """Median ms per photo of each setting at batch 1 and 8, rounds interleaved across them."""
    workers = {name: JsonWorker([sys.executable, __file__, "--worker", name, str(path), str(threads)])
               for name, path in paths.items()}
    try:
        samples = {batch: {name: [] for name in paths} for batch in (1, 8)}
        for _ in range(rounds):
            for batch, calls in ((1, 10), (8, 2)):
                for name, worker_ in workers.items():
                    reply = worker_.ask({"batch": batch, "calls": calls})
                    if "error" in reply:
                        raise RuntimeError(f"{name}: {reply['error']}")
                    samples[batch][name].append(reply["ms"])
        return {batch: {name: statistics.median(v) for name, v in by.items()} for batch, by in samples.items()}
    finally:
        for worker_ in workers.values():
            worker_.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=default_photos())
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    spec = get_model(None)
    photos, labels = labelled_photos(args.photos, spec.preprocessing)
    check = policy.check_batch(spec, 224)
    recorded = np.asarray(policy.shipped_entry(spec, "onnxruntime", "int8", 224)["answers"])
    fp32_path = export.cached_onnx(spec, 224)
    int8_path = quantize.onnx_int8(spec, 224).path
    folder = Path(tempfile.mkdtemp(prefix="shiwu-int8-7bit-"))
    seven_bit = folder / "int8-7bit.onnx"
    quantize_onnx(fp32_path, seven_bit, quantize._calibration(spec, 224, None), reduce_range=True)
    paths = {"fp32": fp32_path, "int8 fused": int8_path, "int8 unfused": int8_path, "int8 7-bit fused": seven_bit}
    runs = {name: session(path, args.threads, unfused=name == "int8 unfused") for name, path in paths.items()}
    accuracy = {}
    for name, run in runs.items():
        top5 = np.argsort(-logits_of(run, photos), axis=1)[:, :5]
        accuracy[name] = (float(np.mean(top5[:, 0] == labels)), float(np.mean((top5 == labels[:, None]).any(1))),
                          float(np.mean(logits_of(run, check).argmax(1) == recorded)))
    del runs  # their threads would compete with the timed processes
    timed = interleaved_ms(paths, args.threads, args.rounds)
    ms1, ms8 = timed[1], timed[8]
    lacks = cpu_lacks("int8", cpu_flags())
    print(f"{cpu_model()}: {lacks or 'has VNNI or AMX'}; shiwu runs int8 "
          f"{'unfused' if fused_int8_saturates() else 'fused'} here. {len(labels)} labelled photos from "
          f"{args.photos}; model alone, {args.threads} threads, medians of {args.rounds} interleaved rounds")
    rows = []
    for name in paths:
        top1, top5, again = accuracy[name]
        rows.append([name, f"{top1:.1%}", f"{top5:.1%}", f"{100 * (accuracy['fp32'][0] - top1):.1f}",
                     "–" if name == "fp32" else f"{again:.0%}", f"{ms1[name]:.2f}", speedup(ms1["fp32"], ms1[name]),
                     f"{ms8[name]:.2f}", speedup(ms8["fp32"], ms8[name])])
    print_table(["setting", "top-1", "top-5", "points below fp32", "recorded answers given again",
                 "ms/photo b1", "vs fp32 b1", "ms/photo b8", "vs fp32 b8"], rows)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        sys.exit(worker(sys.argv[2], sys.argv[3], int(sys.argv[4])))
    tag = "vnni" if cpu_lacks("int8", cpu_flags()) is None else "no-vnni"
    sys.exit(record_run(f"int8_kernels_{tag}", main))
