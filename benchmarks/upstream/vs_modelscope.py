"""The official ModelScope GeneralRecognitionPipeline against shiwu, on the 万物识别 model.

Both sides load the same model directory (by default a SYNTHETIC 54,092-class one in the real
format, written on first use by ``python -m shiwu.models.synthetic``: the real weights cannot be
downloaded here; pass ``--model-dir`` to use a real download) and recognise the same photos one
at a time, decode included. Every contender runs in its own long-lived process and the photos
are sent to them in interleaved rounds (benchmarks/upstream/contenders.py); medians per photo.
The script checks that the top-1 class index equals the official one on every photo and that
the preprocessed input tensors agree, then prints latency, load time and peak RSS and the ratios.

Rows: the official pipeline; shiwu as a user runs it with no flags (``default`` = ``--backend
auto --precision auto``), naming the runtime and precision it chose and how the accuracy policy
accepted it (label-free estimate for this model: it has no labelled photos here, or ``shiwu
tune --eval``'s saved choice); then explicit settings. A setting shiwu refuses is a row that
says why; a refused int8 model is still timed, marked NOT OFFERED (``--no-refused``: not).

The official side needs ``modelscope`` with ``torchvision`` and ``opencv``, and torchvision
needs the CUDA build of torch, so run it from a separate virtualenv (not part of CI) and point
``--official-python`` at it; shiwu runs in the current interpreter::

    python3 -m venv /work/venv-ms
    /work/venv-ms/bin/pip install torch==2.14.1 torchvision==0.29.1          # ~5.5 GB
    /work/venv-ms/bin/pip install modelscope==1.40.2 opencv-python-headless addict six
    /work/venv-ms/bin/pip install datasets simplejson sortedcontainers       # what its pipelines import
    python benchmarks/upstream/vs_modelscope.py --official-python /work/venv-ms/bin/python [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared helper
from bench_common import ROOT, print_table, record_run  # noqa: E402
from contenders import (DEFAULT_ENTRY, Contender, auto_skipped, goal_lines, interleave,  # noqa: E402
                        refusal, serve, shiwu_recognizer, start_shiwu_sides)

DEFAULT_DIR = Path(tempfile.gettempdir()) / "shiwu-synthetic-cv_resnest101_general_recognition"
DEFAULT_BACKENDS = "default,onnxruntime,openvino,openvino:bf16,onnxruntime:int8,openvino:int8"


# ----------------------------------------------------------------------------- the contenders

def official_side(model_dir: Path, threads: int | None):
    import numpy as np
    import torch

    if threads:
        torch.set_num_threads(threads)
    from modelscope.pipelines.cv.general_recognition_pipeline import GeneralRecognitionPipeline

    labels = [line.split("\t")[1] for line in
              (model_dir / "meta_info.txt").read_text(encoding="utf-8").splitlines(keepends=True)]
    index_of = {label: i for i, label in enumerate(labels)}  # labels keep their "\n", like the pipeline's
    # Constructed directly: pipeline() on modelscope 1.40 passes trust_remote_code, which this
    # class's __init__(model, device) does not accept.
    pipe = GeneralRecognitionPipeline(model=str(model_dir), device="cpu")

    def predict(path):
        return index_of[pipe(str(path))["labels"][0]]

    def finish(request):  # the input tensors, for the check against shiwu's (after the peak RSS)
        out = Path(request["inputs_to"])
        for p in request["photos"]:
            np.save(out / (Path(p).name + ".npy"), pipe.preprocess(str(p))["img"].numpy())
        return {}

    name = f"official GeneralRecognitionPipeline (torch {torch.__version__} eager fp32)"
    return name, predict, {"threads": torch.get_num_threads()}, finish


def shiwu_side(model_dir: Path, entry: str, threads: int | None, refused: bool):
    recognizer, info = shiwu_recognizer(model_dir, entry, threads, refused)
    if entry == DEFAULT_ENTRY:
        info.update(auto_skipped(recognizer.spec.name))
    name = (f"shiwu {'default: ' if entry == DEFAULT_ENTRY else ''}{info['runtime']} {info['precision']}"
            + (" (NOT OFFERED)" if refused else ""))
    return name, lambda path: recognizer.predict(path, topk=5)[0].index, info, None


# ----------------------------------------------------------------------------- coordinator

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_DIR,
                        help=f"ModelScope model directory (default: synthetic, written if missing: {DEFAULT_DIR})")
    parser.add_argument("--images", type=Path, default=ROOT / "tests" / "data")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds over the photos (default 3)")
    parser.add_argument("--backends", default=DEFAULT_BACKENDS,
                        help=f"shiwu rows, backend[:precision] or 'default' (default {DEFAULT_BACKENDS})")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads of every side (default: each its own, torch: all cores); on a machine "
                             "that other work shares, torch's OpenMP threads wait for each other far longer "
                             "than ONNX Runtime's or OpenVINO's, and --threads 1 compares the work alone")
    parser.add_argument("--official-python", default=sys.executable,
                        help="interpreter with modelscope, torchvision and opencv (default: this one)")
    parser.add_argument("--no-refused", action="store_true", help="do not time an int8 model shiwu refuses")
    parser.add_argument("--worker", choices=["official", "shiwu"], help=argparse.SUPPRESS)
    parser.add_argument("--entry", default=DEFAULT_ENTRY, help=argparse.SUPPRESS)
    parser.add_argument("--refused", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "official":
        return serve(lambda: official_side(args.model_dir, args.threads))
    if args.worker == "shiwu":
        return serve(lambda: shiwu_side(args.model_dir, args.entry, args.threads, args.refused))

    photos = sorted(p for p in args.images.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not (args.model_dir / "pytorch_model.pt").is_file():
        print(f"writing a SYNTHETIC 54,092-class model to {args.model_dir} (once) ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "shiwu.models.synthetic", str(args.model_dir)], check=True)

    def command(python, side, *extra):
        return [python, __file__, "--worker", side, "--model-dir", str(args.model_dir), *extra]

    entries = [e for e in args.backends.split(",") if e]
    threads = ["--threads", str(args.threads)] if args.threads else []
    refused: dict[str, str] = {}
    for entry in entries:  # once each, alone: export, int8 calibration, verdicts, auto's choice
        print(f"first start of shiwu {entry} ...", file=sys.stderr)
        first = Contender(command(sys.executable, "shiwu", "--entry", entry, *threads), entry)
        if "error" in first.hello:
            refused[entry] = first.hello["error"]
        first.close()
    below_floor = [] if args.no_refused else [e for e in entries if "is not offered" in refused.get(e, "")]
    contenders = []
    from ceilings import ceilings_in_child  # the GEMM ceilings now and after the rounds (report)
    from shiwu.cpu import default_threads

    args.early_ceilings = ceilings_in_child(args.threads or default_threads())
    print("starting the official pipeline ...", file=sys.stderr)
    official = Contender(command(args.official_python, "official", *threads), "official")
    if "error" in official.hello:
        print("the official pipeline did not start:\n" + official.hello["error"], file=sys.stderr)
        return 1
    contenders.append(official)
    contenders += start_shiwu_sides(command, entries, refused, below_floor, extra=tuple(threads))
    interleave(contenders, photos, args.rounds)
    inputs = Path(tempfile.mkdtemp(prefix="shiwu-bench-inputs-"))
    try:
        ends = {c.entry: c.close({"photos": [str(p) for p in photos], "inputs_to": str(inputs)})
                for c in contenders}
        worst = input_difference(args.model_dir, photos, inputs)
    finally:
        shutil.rmtree(inputs, ignore_errors=True)
    return report(args, photos, contenders, ends, refused, worst)


def input_difference(model_dir: Path, photos, folder: Path) -> float:
    """Largest |official - shiwu| over the preprocessed input tensors of every photo."""
    import numpy as np

    from shiwu.images import load_image
    from shiwu.models.registry import get_model

    pre = get_model(str(model_dir)).preprocessing
    return max(float(np.abs(np.load(folder / (p.name + ".npy")).reshape(3, pre.size, pre.size)
                            - pre(load_image(p, min_size=pre.decode_min_size))).max()) for p in photos)


def report(args, photos, contenders, ends, refused, worst_input) -> int:
    config = json.loads((args.model_dir / "configuration.json").read_text(encoding="utf-8"))
    classes = sum(1 for _ in open(args.model_dir / "meta_info.txt", encoding="utf-8"))
    kind = "SYNTHETIC (random weights)" if config.get("synthetic") else "real"
    load = " / ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"{kind} ResNeSt-101, {classes:,} classes, {args.model_dir}")
    print(f"{len(photos)} photos x {args.rounds} rounds, interleaved, one photo per call, decode included; "
          f"each contender in its own process; {os.cpu_count()} CPUs, threads {args.threads or 'each side its own'}; "
          f"load average at the end {load}")
    print(f"input tensors, official vs shiwu: max abs difference {worst_input:.2e} over {len(photos)} photos\n")

    official, shiwu = contenders[0], contenders[1:]
    fp32 = next((c for c in shiwu if c.hello.get("precision") == "fp32"), None)

    def same(a, b):
        return f"{sum(a.answers[p.name] == b.answers[p.name] for p in photos)}/{len(photos)}"

    base, base_cpu, base_rss = official.median, statistics.median(official.cpu), ends["official"]["peak_rss_mb"]
    rows = []
    for c in contenders:
        p95 = sorted(c.times)[int(0.95 * (len(c.times) - 1))]
        rows.append([c.name, f"{c.median * 1e3:.1f}", f"{p95 * 1e3:.1f}", f"{statistics.median(c.cpu) * 1e3:.0f}",
                     f"{c.hello['load_s']:.2f}", f"{ends[c.entry]['peak_rss_mb']:.0f}",
                     f"{base / c.median:.2f}x", f"{base_cpu / statistics.median(c.cpu):.2f}x",
                     f"{ends[c.entry]['peak_rss_mb'] / base_rss:.0%}",
                     "-" if c is official else same(c, official),
                     "-" if c is official or c is fp32 or fp32 is None else same(c, fp32),
                     c.hello.get("accepted_by", "-")])
    for entry, why in refused.items():
        if not any(c.entry == entry for c in contenders):
            rows.append([f"shiwu {entry}"] + ["-"] * 10 + [f"refused: {refusal(why)}"])
    print_table(["side", "median ms", "p95 ms", "CPU ms", "load s", "peak RSS MiB", "speed-up", "CPU ratio",
                    "RSS vs official", "top-1 = official", "top-1 = shiwu fp32", "accepted by"], rows)
    default = next((c for c in shiwu if c.entry == DEFAULT_ENTRY), None)
    if default is not None and default.hello.get("skipped"):
        print("\nthe default (--backend auto --precision auto) left out: "
              + "; ".join(f"{k}: {v}" for k, v in default.hello["skipped"].items()))
    print("\nspeed-up = official median wall time per photo / this one (same run, interleaved); CPU ratio = "
          "the same for CPU time of all threads;\npeak RSS = ru_maxrss of each side's own process; load s = "
          "constructing the pipeline / Recognizer, shiwu's cache warm (filled by a first start beforehand).")
    # imported here: the official side runs this file in its own Python, which has no shiwu
    from ceilings import speed_up_bounds
    from shiwu.cpu import default_threads

    bounds = speed_up_bounds(args.model_dir, official.median, args.threads or default_threads(),
                              earlier=args.early_ceilings)
    print("\n".join([""] + goal_lines(official, shiwu, 2, 4, bounds)))
    differ = [c.name for c in shiwu if not c.refused and c.hello.get("precision") == "fp32"
              and same(c, official) != f"{len(photos)}/{len(photos)}"]
    if differ:
        print(f"top-1 DIFFERENT from the official on some photo: {', '.join(differ)}")
    return 1 if differ else 0


def result_name(argv: list[str]) -> str:
    """vs_modelscope.md for each side's own threads, vs_modelscope_threads1.md for --threads 1."""
    given = argv[argv.index("--threads") + 1] if "--threads" in argv[:-1] else None
    return "vs_modelscope" + (f"_threads{given}" if given else "")


if __name__ == "__main__":
    sys.exit(record_run(result_name(sys.argv), main))
