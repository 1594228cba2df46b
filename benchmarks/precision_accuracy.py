"""Accuracy and speed of every runtime x precision x input size, and the shipped accuracy data.

    python benchmarks/precision_accuracy.py [--quick] [--models efficientnet-lite0,efficientnet-lite2]
                                            [--runtimes onnxruntime,openvino] [--no-speed]
                                            [--photos ../shared/imagenet-dev] [--write-data]

For each setting: top-1 and top-5 on the labelled photos (imagenet-dev: 500 ImageNet photos, one
each of 500 classes, read in place and never copied), the relative top-1 drop against fp32 at
the model's own size, the label-free estimate of that drop (shiwu.backends.estimate) computed
on the same photos without their labels and on the bundled photos' check views (what a user's
machine computes), model-only ms per photo at batch 1 and 8, and GFLOP/s as a % of the same-run
ceiling: the best GEMM any runtime gives here (onnxruntime and OpenVINO matmuls, per precision),
with the instruction-set peak printed beside it.

``--write-data`` rewrites src/shiwu/backends/measured_accuracy.json, the figures shiwu ships and
checks on the user's machine (with the answers on the bundled photos that prove a machine
reproduces them). Results go to benchmarks/results/precision_accuracy.{json,md}.
``--quick``: EfficientNet-Lite0 at its own size, fewer speed rounds (a few minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from bench_common import results_dir  # noqa: E402
from ceilings import isa_peaks, model_gflop, runtime_ceilings  # noqa: E402
from shiwu.backends import BackendUnavailable, backend_class  # noqa: E402
from shiwu.backends.accuracy_change import LEVEL, paired_change  # noqa: E402
from shiwu.backends.estimate import measures  # noqa: E402
from shiwu.backends.policy import SHIPPED, check_batch, machine, run_all  # noqa: E402
from shiwu.backends.runtimes import BY_NAME, INT8_RECIPES, cpu_lacks, fused_int8_saturates  # noqa: E402
from shiwu.cpu import cpu_flags, default_threads  # noqa: E402
from shiwu.images import ImageError, load_image  # noqa: E402
from shiwu.models.registry import get_model  # noqa: E402

SIZE_FACTORS = (1.0, 0.875, 0.75)


def find_photos(given: str | None) -> Path:
    candidates = [Path(given)] if given else [Path(os.environ.get("SHIWU_IMAGENET_DEV", "")), *(
        p / "shared" / "imagenet-dev" for p in (ROOT.parent, ROOT.parent.parent, ROOT.parent.parent.parent))]
    for folder in candidates:
        if str(folder) and (folder / "classes.tsv").is_file():
            return folder
    sys.exit("precision_accuracy: no imagenet-dev folder found; give --photos DIR")


def labelled_photos(folder: Path, limit: int | None) -> tuple[list[Path], np.ndarray]:
    index = {}
    for line in (folder / "classes.tsv").read_text(encoding="utf-8").splitlines():
        i, synset, _name = line.split("\t")
        index[synset] = int(i)
    photos = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpeg", ".jpg", ".png"))
    photos = [p for p in photos if p.name.split("_")[0] in index][:limit]
    return photos, np.array([index[p.name.split("_")[0]] for p in photos])


def preprocessed(photos: list[Path], pre) -> np.ndarray:
    images = []
    for p in photos:
        try:
            images.append(load_image(p, min_size=pre.decode_min_size))
        except ImageError as exc:
            sys.exit(f"precision_accuracy: {exc}")
    return pre.batch(images)


def topk_accuracy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    top5 = np.argsort(-logits, axis=1)[:, :5]
    return float(np.mean(top5[:, 0] == labels)), float(np.mean([t in row for t, row in zip(labels, top5)]))


def ms_per_photo(backend, batch: np.ndarray, rounds: int, seconds: float) -> float:
    """Median over ``rounds`` of each round's median call, divided by the batch size."""
    for _ in range(2):
        backend.run(batch)
    medians = []
    for _ in range(rounds):
        times, deadline = [], time.perf_counter() + seconds
        while len(times) < 2 or time.perf_counter() < deadline:
            start = time.perf_counter()
            backend.run(batch)
            times.append(time.perf_counter() - start)
        medians.append(np.median(times))
    return float(np.median(medians)) * 1e3 / len(batch)


def measure_model(name: str, args, photos, labels, ceilings) -> list[dict]:
    spec = get_model(name)
    native = spec.preprocessing.size
    factors = SIZE_FACTORS[:1] if args.quick else SIZE_FACTORS
    sizes = list(dict.fromkeys(max(32, int(round(native * f / 4)) * 4) for f in factors))
    rows: list[dict] = []
    reference = None
    for size in sizes:
        pre = spec.preprocessing.with_size(size)
        inputs = preprocessed(photos, pre)
        check = check_batch(spec, size)
        gflop = model_gflop(spec, size)
        for runtime in args.runtimes:
            for precision in BY_NAME[runtime].precisions:
                if precision not in args.precisions:
                    continue
                row = {"model": spec.name, "weights": spec.fingerprint(), "runtime": runtime,
                       "precision": precision, "size": size, "photos": len(photos)}
                if precision == "int8":  # the shipped figures hold for the recipe that made the model
                    row["int8 recipe"] = INT8_RECIPES[runtime]
                lacks = cpu_lacks(precision, cpu_flags())
                if lacks and precision == "bf16":
                    rows.append({**row, "error": lacks})
                    continue
                started = time.perf_counter()
                try:
                    backend = backend_class(runtime)(spec, size=size, precision=precision,
                                                     threads=args.threads)
                except BackendUnavailable as exc:
                    rows.append({**row, "error": str(exc)})
                    print(f"{spec.name} {runtime} {precision} {size}: {exc}", file=sys.stderr)
                    continue
                logits = run_all(backend, inputs)
                answers = run_all(backend, check)
                row["top1"], row["top5"] = topk_accuracy(logits, labels)
                correct = logits.argmax(1) == labels
                if reference is None:  # the first setting is fp32 at the model's own size
                    reference = {"logits": logits, "check": answers, "top1": row["top1"], "correct": correct}
                else:  # photo by photo against fp32: what another set of photos like these may show
                    change = paired_change(reference["correct"], correct).to_dict()
                    row.update(lost=change["lost"], gained=change["gained"], drop_interval=change["drop_interval"])
                row["fp32_top1"] = reference["top1"]
                row["drop"] = round(1 - row["top1"] / reference["top1"], 5)
                # label-free measures, on the same photos without their labels and on the bundled
                # photos' check views, always against fp32 at the model's own size
                for where, ref, got in (("dev", reference["logits"], logits), ("bundled", reference["check"], answers)):
                    m = measures(ref, got)
                    row[f"estimate_{where}"] = round(m["estimated_drop"], 5)
                    row[f"agreement_{where}"] = round(m["agreement"], 4)
                    row[f"confident_agreement_{where}"] = m["confident_agreement"]
                    row[f"top1_in_top5_{where}"] = round(m["fp32_top1_in_top5"], 4)
                    row[f"kl_{where}"] = round(m["kl"], 5)
                row["answers"] = [int(a) for a in answers.argmax(1)]
                row["accuracy_seconds"] = round(time.perf_counter() - started, 1)
                if not args.no_speed:
                    rounds, seconds = (3, 0.3) if args.quick else (5, 0.6)
                    for batch in (1, 8):
                        row[f"ms_b{batch}"] = round(ms_per_photo(backend, inputs[:batch], rounds, seconds), 3)
                    # ONNX Runtime's int8 unfused (CPUs without VNNI) sums in float: held to fp32's
                    computes_in = "fp32" if (runtime, precision) == ("onnxruntime", "int8") and \
                        fused_int8_saturates() else precision
                    ceiling = max(ceilings.get(computes_in, {}).values(), default=None)
                    if gflop and ceiling:
                        row["gflop"] = round(gflop, 3)
                        row["ceiling_gflops"] = ceiling
                        row["pct_ceiling_b8"] = round(100 * gflop / (row["ms_b8"] / 1e3) / ceiling, 1)
                print(table_line(row), flush=True)
                rows.append(row)
                del backend
    return rows


def _pct(v, digits=1):
    return "–" if v is None else f"{v * 100:.{digits}f}%"


def _num(v, fmt=".2f"):
    return "–" if v is None else format(v, fmt)


def _lost_gained(r: dict) -> str:
    return "–" if r.get("lost") is None else f"{r['lost']} / {r['gained']}"


def _interval(r: dict) -> str:
    if r.get("drop_interval") is None:
        return "–"
    low, high = r["drop_interval"]
    return f"{low * 100:+.2f}% to {high * 100:+.2f}%"


HEADER = (f"| model | runtime | precision | size | top-1 | top-5 | drop vs fp32 | lost / gained "
          f"| drop, {LEVEL:.0%} interval | estimate (dev photos) "
          "| estimate (bundled views) | ms/photo b1 | ms/photo b8 | % ceiling b8 |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def table_line(r: dict) -> str:
    if "error" in r:
        return f"| {r['model']} | {r['runtime']} | {r['precision']} | {r['size']} | {r['error']} |"
    return (f"| {r['model']} | {r['runtime']} | {r['precision']} | {r['size']} | {_pct(r['top1'])} "
            f"| {_pct(r['top5'])} | {_pct(r['drop'], 2)} | {_lost_gained(r)} | {_interval(r)} "
            f"| {_pct(r.get('estimate_dev'), 2)} "
            f"| {_pct(r.get('estimate_bundled'), 2)} | {_num(r.get('ms_b1'))} | {_num(r.get('ms_b8'))} "
            f"| {_num(r.get('pct_ceiling_b8'), '.0f')} |")


def write_data(rows: list[dict], photos_folder: Path, here: dict) -> None:
    keep = ("model", "weights", "runtime", "precision", "size", "int8 recipe", "photos", "top1", "top5", "fp32_top1",
            "drop", "lost", "gained", "drop_interval", "estimate_dev", "estimate_bundled", "answers")
    data = {
        "about": "top-1 / top-5 of each setting on imagenet-dev, written by "
                 "`python benchmarks/precision_accuracy.py --write-data`; `answers` are the setting's "
                 "top-1 on the bundled photos' check views (shiwu.backends.policy.check_batch), which "
                 "a user's machine must reproduce before the figures are believed; an int8 entry holds "
                 "for the quantizer recipe it names (`int8 recipe`, shiwu.backends.runtimes.INT8_RECIPES): "
                 "a model made another way is not judged by it",
        "photos": f"{photos_folder.name}: {rows[0]['photos'] if rows else 0} labelled photos",
        "measured_on": here,
        "settings": [{k: r[k] for k in keep if k in r} for r in rows if "error" not in r],
    }
    SHIPPED.write_text(json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"wrote {SHIPPED.relative_to(ROOT)}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="efficientnet-lite0,efficientnet-lite2")
    parser.add_argument("--runtimes", default="onnxruntime,openvino")
    parser.add_argument("--precisions", default="fp32,bf16,int8")
    parser.add_argument("--photos", default=None, help="labelled photos (default: ../shared/imagenet-dev)")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N photos")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="Lite0 at its own size, short speed rounds")
    parser.add_argument("--no-speed", action="store_true", help="accuracy only")
    parser.add_argument("--write-data", action="store_true", help="rewrite the shipped accuracy data")
    parser.add_argument("--out", default=None, help="results file stem under benchmarks/results/")
    args = parser.parse_args()
    args.threads = args.threads or default_threads()
    lacking = [why for why in (cpu_lacks(p, cpu_flags()) for p in ("bf16", "int8")) if why]
    if args.write_data and lacking:
        # the shipped answers are what every other machine must reproduce: they come from a CPU
        # that runs each reduced precision natively (OpenVINO's int8 rounds otherwise without
        # VNNI, and bf16 cannot run at all), or every user's check would fail
        parser.error(f"--write-data needs a CPU with bf16 and VNNI instructions: {'; '.join(lacking)}")
    args.runtimes = [r for r in args.runtimes.split(",") if r]
    args.precisions = [p for p in args.precisions.split(",") if p]
    models = ["efficientnet-lite0"] if args.quick else args.models.split(",")
    folder = find_photos(args.photos)
    photos, labels = labelled_photos(folder, args.limit)
    here = machine()
    ceilings = {} if args.no_speed else runtime_ceilings(args.threads)
    print(f"{len(photos)} labelled photos from {folder}; {here['cpu']} ({', '.join(here['flags'])}), "
          f"{args.threads} threads; GEMM ceilings GFLOP/s (int8: GOP/s): {ceilings}")
    print(HEADER, flush=True)
    rows = []
    for name in models:
        rows += measure_model(name, args, photos, labels, ceilings)
    peaks = isa_peaks(args.threads)
    print(f"instruction-set peak (nominal, {args.threads} cores): {peaks}")
    results = results_dir()  # or SHIWU_BENCH_RESULTS, as for every benchmark
    results.mkdir(parents=True, exist_ok=True)
    report = {"command": " ".join(["python", "benchmarks/precision_accuracy.py", *sys.argv[1:]]),
              "photos": str(folder), "machine": here, "threads": args.threads,
              "load_average": os.getloadavg(), "ceilings": ceilings, "isa_peaks": peaks,
              "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "rows": [{k: v for k, v in r.items() if k != "answers"} for r in rows]}
    stem = args.out or ("precision_accuracy_quick" if args.quick else "precision_accuracy")
    (results / f"{stem}.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    (results / f"{stem}.md").write_text(
        f"`{report['command']}` — {here['cpu']}, {args.threads} threads, load {report['load_average']}\n\n"
        + HEADER + "\n" + "\n".join(table_line(r) for r in rows) + "\n")
    if args.write_data:
        write_data(rows, folder, here)


if __name__ == "__main__":
    main()
