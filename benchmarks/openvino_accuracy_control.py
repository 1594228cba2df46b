"""OpenVINO int8 of the default model with NNCF's accuracy control, against shiwu's NNCF recipe.

Development measurement for issue 22 ("the layers that lose accuracy left in higher precision"):
``nncf.quantize_with_accuracy_control`` ranks the quantized layers by what they cost in top-1 on
labelled photos (../shared/imagenet-dev, never copied into the repository) and reverts the worst
to float until the drop fits ``--max-drop`` (absolute). Calibration is shiwu's own (views of the
bundled photos). The layers it reverts were chosen on the same photos the table measures, so the
figures are optimistic until a held-back set confirms them. Speed: each model alone on one photo,
batch 1, rounds interleaved between the two models, medians.

    python benchmarks/openvino_accuracy_control.py [--max-drop 0.004] [--rounds 200]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/: the shared helpers
from bench_common import print_table, record_run  # noqa: E402
from int8_accuracy import default_photos, labelled_photos  # noqa: E402


def top1(compiled, items) -> float:
    hits = total = 0
    for photos, labels in items:
        hits += int((compiled(photos)[0].argmax(1) == labels).sum())
        total += len(labels)
    return hits / total


def float_layers(model) -> list[str]:
    """Convolutions and matrix products whose inputs are not quantized."""
    quantized_inputs = ("FakeQuantize", "Convert", "Multiply", "Subtract")
    return [op.get_friendly_name() for op in model.get_ops()
            if op.get_type_name() in ("Convolution", "GroupConvolution", "MatMul")
            and not any(v.get_node().get_type_name() in quantized_inputs for v in op.input_values())]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=default_photos())
    parser.add_argument("--max-drop", type=float, default=0.004, help="absolute top-1 drop allowed")
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import nncf
    import openvino as ov

    from shiwu.backends import export, quantize
    from shiwu.models.registry import get_model

    spec = get_model(None)
    photos, labels = labelled_photos(args.photos, spec.preprocessing)
    labels = np.asarray(labels)
    items = [(photos[i:i + 50], labels[i:i + 50]) for i in range(0, len(photos), 50)]
    calib = quantize._calibration(spec, 224, None)
    calibration = nncf.Dataset([calib[i:i + 1] for i in range(len(calib))])
    core = ov.Core()
    fp32 = core.read_model(str(export.openvino_source(spec, 224)))
    models = {"fp32": fp32, "int8, shiwu's NNCF recipe": quantize.openvino_int8(spec, 224).path}
    start = time.perf_counter()
    models["int8, NNCF accuracy control"] = nncf.quantize_with_accuracy_control(
        fp32, calibration, nncf.Dataset(items), validation_fn=top1, max_drop=args.max_drop,
        drop_type=nncf.DropType.ABSOLUTE, subset_size=len(calib))
    control_seconds = time.perf_counter() - start

    config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": args.threads,
              "PERFORMANCE_HINT": "LATENCY"}
    compiled = {name: core.compile_model(m if not isinstance(m, Path) else str(m), "CPU", config)
                for name, m in models.items()}
    accuracy = {name: top1(c, items) for name, c in compiled.items()}
    one = photos[:1]
    times: dict[str, list[float]] = {name: [] for name in compiled}
    for _ in range(args.rounds):
        for name, c in compiled.items():
            t = time.perf_counter()
            c(one)
            times[name].append(time.perf_counter() - t)
    reference = accuracy["fp32"]
    rows = []
    for name, model in models.items():
        loaded = core.read_model(str(model)) if isinstance(model, Path) else model
        reverted = float_layers(loaded) if name != "fp32" else []
        rows.append([name, f"{accuracy[name]:.1%}", f"{100 * (reference - accuracy[name]):.1f}",
                     f"{statistics.median(times[name][5:]) * 1e3:.2f}",
                     ", ".join(r.split("/")[2] for r in reverted) or "-"])
    print(f"{spec.name} 224px, {len(labels)} labelled photos ({args.photos}), openvino, {args.threads} threads; "
          f"accuracy control (max drop {args.max_drop:.3f} absolute) took {control_seconds:.0f} s\n")
    print_table(["model", "top-1", "drop (points)", "ms/photo b1, model only", "layers in float"], rows)
    return 0


if __name__ == "__main__":
    sys.exit(record_run("openvino_accuracy_control", main))
