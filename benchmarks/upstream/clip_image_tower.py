"""The Chinese-CLIP image tower (the zero-shot head's graph) on every runtime, same run: batch-1
latency, GFLOP/s, and agreement with torch fp32; the official ModelScope CLIP as the baseline.

    python benchmarks/upstream/clip_image_tower.py [DIR] [--threads 2] [--runs 20] [--labels 1000]

DIR is a Chinese-CLIP model directory (default: a synthetic ViT-B/16 written to a temporary
folder: random weights, the real sizes). GFLOP: multiply-adds x 2 of convolutions, linear layers
and attention, for one image.

Measured on the 2-core development machine, idle (load average 0.00), synthetic ViT-B/16,
1000 labels, 35.1 GFLOP per image:

    official ModelScope encode_image (eager)   258.5 ms   136 GFLOP/s   1.00x
    shiwu torch fp32 (eager)                   225.9 ms   155 GFLOP/s   1.14x
    onnxruntime fp32                           108.5 ms   324 GFLOP/s   2.38x   max |Δlogit| 1.3e-05
    openvino f32                               101.7 ms   345 GFLOP/s   2.54x   max |Δlogit| 1.9e-05
    openvino bf16                               65.4 ms   537 GFLOP/s   3.95x   max |Δlogit| 2.3e-01

torch's own 2048² fp32 matmul reaches only 166 GFLOP/s in the same conditions (bf16: 730), so
eager torch, official or not, is held to that; ONNX Runtime's and OpenVINO's fp32 kernels are
twice as fast on this CPU. On a busy machine every figure moves by 2-10x: compare within a run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared helper
from bench_common import record_run, median_ms  # noqa: E402


def gflop(head, example) -> float:
    """Multiply-adds x 2 of one image: convolutions and linear layers (counted on a forward pass)
    plus attention's two (L x L x width) products per layer, which FlopCounterMode misses in
    torch's CPU flash-attention kernel."""
    total = 0

    def count(module, inputs, output):
        nonlocal total
        if isinstance(module, torch.nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
            total += 2 * output.numel() * k
        else:
            total += 2 * inputs[0].numel() // inputs[0].shape[-1] * module.in_features * module.out_features

    handles = [m.register_forward_hook(count) for m in head.modules()
               if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    with torch.inference_mode():
        head(example)
    for handle in handles:
        handle.remove()
    config = head.visual.config
    tokens = config.grid ** 2 + 1
    total += config.layers * 2 * 2 * tokens * tokens * config.width
    # the fused q/k/v projection is an F.linear on a Parameter, not a module: 3 x width² per token
    total += config.layers * 2 * tokens * config.width * 3 * config.width
    return total / 1e9


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", nargs="?", help="Chinese-CLIP model directory (default: synthetic ViT-B/16)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--labels", type=int, default=1000, help="zero-shot classes (default 1000)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from shiwu.models.clip_files import load_clip
    from shiwu.models.clip import ZeroShotHead

    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(args.directory) if args.directory else None
        if directory is None:
            from shiwu.models.synthetic_clip import write_synthetic_clip

            directory = write_synthetic_clip(Path(scratch) / "model")
        clip = load_clip(directory)
        size = clip.config.vision.image_resolution
        weights = torch.nn.functional.normalize(torch.randn(args.labels, clip.config.embed_dim), dim=1) * 100
        head = ZeroShotHead(clip.visual, weights).eval()
        image = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 3, size, size), dtype=np.float32))
        work = gflop(head, image)
        with torch.inference_mode():
            expected = head(image).numpy()

        results = {}
        from clip_official import official_encode_image  # noqa: E402 (beside this script)

        official = official_encode_image(directory)
        with torch.inference_mode():
            results["official ModelScope encode_image (eager)"] = (median_ms(lambda: official(image), args.runs), None)
            results["shiwu torch fp32 (eager)"] = (median_ms(lambda: head(image), args.runs), expected)

        onnx_path = Path(scratch) / "head.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(head, (image,), str(onnx_path), dynamo=False, opset_version=17,
                              input_names=["image"], output_names=["logits"],
                              dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = args.threads
        session = onnxruntime.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        feed = {"image": image.numpy()}
        results["onnxruntime fp32"] = (median_ms(lambda: session.run(None, feed), args.runs),
                                       session.run(None, feed)[0])

        import openvino

        core = openvino.Core()
        model = core.read_model(str(onnx_path))
        for precision in ("f32", "bf16"):
            compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": precision,
                                                         "INFERENCE_NUM_THREADS": args.threads,
                                                         "PERFORMANCE_HINT": "LATENCY"})
            request = compiled.create_infer_request()
            results[f"openvino {precision}"] = (median_ms(lambda: request.infer([image.numpy()]), args.runs),
                                                request.infer([image.numpy()])[0].copy())

    baseline = results["official ModelScope encode_image (eager)"][0]
    print(f"Chinese-CLIP image tower + {args.labels}-label head, {size}x{size}, batch 1, "
          f"{args.threads} threads: {work:.1f} GFLOP per image")
    print(f"{'runtime':44s} {'ms/image':>9s} {'GFLOP/s':>8s} {'vs official':>11s} {'max |Δlogit|':>12s}")
    for name, (ms, logits) in results.items():
        delta = "" if logits is None else f"{np.abs(logits - expected).max():.1e}"
        print(f"{name:44s} {ms:9.1f} {work / ms * 1e3:8.0f} {baseline / ms:10.2f}x {delta:>12s}")
    return 0


if __name__ == "__main__":
    sys.exit(record_run("clip_image_tower", main))
