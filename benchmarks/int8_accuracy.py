"""int8 against fp32 on labelled photos: top-1 / top-5 on imagenet-dev and model speed at batch 1.

Development measurement for the quantizer (src/shiwu/backends/quantize*.py): each runtime's
int8 model as shiwu builds and caches it (calibrated on the bundled photos, never on these),
beside fp32 on the same runtime. Accuracy: every photo of ../shared/imagenet-dev (one per
class, the label in the file name), preprocessed as ``shiwu predict`` does. Speed: the model
alone on one preprocessed photo, rounds interleaved across the settings, the median reported
(a shared machine is noisy: compare the ratios, not the milliseconds). Writes
benchmarks/results/int8_accuracy.json. Usage:

    python benchmarks/int8_accuracy.py [--photos ../shared/imagenet-dev] [--rounds 30] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from bench_common import results_dir
from shiwu.backends import backend_class, quantize
from shiwu.images import load_image
from shiwu.models.registry import get_model

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = (("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("openvino", "fp32"),
            ("openvino", "bf16"), ("openvino", "int8"))


def default_photos() -> Path:
    """../shared/imagenet-dev beside the checkout (a git worktree may sit one folder deeper)."""
    for parent in ROOT.parents:
        if (parent / "shared" / "imagenet-dev").is_dir():
            return parent / "shared" / "imagenet-dev"
    return ROOT.parent / "shared" / "imagenet-dev"


def labelled_photos(folder: Path, preprocessing) -> tuple[np.ndarray, np.ndarray]:
    index = {}
    for line in (folder / "classes.tsv").read_text(encoding="utf-8").splitlines():
        if line.strip():
            number, synset, _ = line.split("\t", 2)
            index[synset] = int(number)
    paths = sorted(folder.glob("*.JPEG"))
    labels = np.array([index[p.name.split("_", 1)[0]] for p in paths])
    batch = np.stack([preprocessing(load_image(p, min_size=preprocessing.decode_min_size)) for p in paths])
    return batch, labels


def runner(spec, backend: str, precision: str, threads: int):
    """The backend as shiwu runs it. int8 is measured whatever the accuracy policy would say of
    it (measuring it is the point): the runtime's class is built directly, without the policy
    that ``create_backend`` consults."""
    instance = backend_class(backend)(spec, size=224, precision=precision, threads=threads)
    record = {}
    if precision == "int8":
        build = quantize.onnx_int8 if backend == "onnxruntime" else quantize.openvino_int8
        record = build(spec, 224).record
    return instance.run, record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=default_photos())
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--settings", default=",".join(f"{b}:{p}" for b, p in SETTINGS))
    parser.add_argument("--out", type=Path, default=results_dir() / "int8_accuracy.json")
    args = parser.parse_args()

    spec = get_model(None)
    photos, labels = labelled_photos(args.photos, spec.preprocessing)
    runs, rows = {}, {}
    for setting in args.settings.split(","):
        backend, precision = setting.split(":")
        try:
            runs[setting], record = runner(spec, backend, precision, args.threads)
        except Exception as exc:  # noqa: BLE001 - e.g. bf16 on a CPU without it: say so, go on
            print(f"{setting:<18} unavailable: {exc}")
            continue
        logits = np.concatenate([runs[setting](photos[i:i + 50]) for i in range(0, len(photos), 50)])
        top5 = np.argsort(-logits, axis=1)[:, :5]
        rows[setting] = {"top1": float(np.mean(top5[:, 0] == labels)),
                         "top5": float(np.mean((top5 == labels[:, None]).any(1))),
                         "answers": top5[:, 0], "record": record}
    for setting, row in rows.items():
        reference = rows.get(f"{setting.split(':')[0]}:fp32")
        row["agrees_with_fp32"] = float(np.mean(row["answers"] == reference["answers"])) if reference else None

    one = photos[:1].copy()
    times = {s: [] for s in runs}
    for s in runs:
        for _ in range(20):  # warm-up
            runs[s](one)
    for _ in range(args.rounds):  # interleaved: every setting sees the same load
        for s, run in runs.items():
            start = time.perf_counter()
            for _ in range(10):
                run(one)
            times[s].append((time.perf_counter() - start) / 10 * 1e3)
    fp32_ms = {b: statistics.median(times[f"{b}:fp32"]) for b in ("onnxruntime", "openvino") if f"{b}:fp32" in times}
    print(f"{len(labels)} photos from {args.photos}; model alone, batch 1, {args.threads} threads, "
          f"median of {args.rounds} interleaved rounds")
    print(f"{'setting':<18} {'top-1':>6} {'top-5':>6} {'drop':>6} {'agree':>6} {'ms':>6} {'vs fp32':>8}")
    for setting, row in rows.items():
        backend = setting.split(":")[0]
        row["ms_batch1"] = statistics.median(times[setting])
        row["speedup_vs_fp32"] = fp32_ms[backend] / row["ms_batch1"] if backend in fp32_ms else None
        reference = rows.get(f"{backend}:fp32")
        row["drop_points"] = 100 * (reference["top1"] - row["top1"]) if reference else None
        print(f"{setting:<18} {row['top1']:6.1%} {row['top5']:6.1%} {row['drop_points'] or 0:6.1f} "
              f"{row['agrees_with_fp32'] or 0:6.1%} {row['ms_batch1']:6.2f} {row['speedup_vs_fp32'] or 0:7.2f}x")
        del row["answers"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"photos": len(labels), "threads": args.threads, "rounds": args.rounds,
                                    "rows": rows}, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
