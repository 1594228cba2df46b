"""The article's CPU recipe against shiwu's predict path, end to end, one photo at a time.

The article's recipe (推理.py): ``torch.load("model.pth", map_location="cpu")`` (or, after its
step 1, ``torch.jit.load("traced_model_cpu.pt")``), torch eager, ``Resize((224, 224))`` without
a crop, ImageNet mean/std, ``torch.no_grad()``, default threads, one image per call,
``torch.max`` for the top-1. shiwu: ``Recognizer.predict(path, topk=5)`` — decode,
preprocess, inference on the chosen backend, top-5 softmax with Chinese labels.

Without ``--model`` both sides run the embedded EfficientNet-Lite0 (shiwu with its own
preprocessing). With ``--model model.pth --labels label_map.json`` both run the reader's own
file, shiwu with ``--resize squash`` (the recipe's preprocessing) so the top-1 must agree on
every photo; ``--also traced_model_cpu.pt,model.onnx`` adds shiwu rows for other saves of the
same model. Decode is included on both sides and the ratio is measured in this run: every row
runs in its own long-lived process (one runtime's idle threads cannot slow another's), and the
rows take turns, round after round, each timing every photo once a round, so a drifting machine
load falls on all rows alike; medians over all rounds. Usage:

    python benchmarks/upstream/vs_article.py [--repeat 20] [--backends torch,onnxruntime,openvino]
    python benchmarks/upstream/vs_article.py --model model.pth --labels label_map.json --trust-model-code \\
        --also traced_model_cpu.pt,model.onnx
"""

from __future__ import annotations

import argparse
import statistics
import time
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from shiwu import Recognizer
from shiwu.models.model_files import kind_of
from shiwu.models.registry import get_model
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared helper
from bench_common import (ROOT, JsonWorker, load_note, print_table, record_run,  # noqa: E402
                          serve_requests, speedup)

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def article_recipe(model):
    def predict(path):
        image = Image.open(path).convert("RGB")
        pixels = np.asarray(image.resize((224, 224), Image.Resampling.BILINEAR), dtype=np.float32) / 255.0
        tensor = torch.from_numpy(((pixels - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)).unsqueeze(0)
        with torch.no_grad():
            output = model(tensor)
        _, index = torch.max(output, 1)
        return int(index.item())
    return predict


def article_model(path: Path, trusted: bool):
    """The reader's model, loaded as 推理.py (or its step 1) loads it."""
    if kind_of(path) == "torchscript":
        return torch.jit.load(str(path), map_location="cpu").eval()
    if not trusted:
        raise SystemExit(f"{path} is a whole pickled model: pass --trust-model-code to unpickle it")
    model = torch.load(path, map_location="cpu", weights_only=False)
    return getattr(model, "module", model).eval()


def build_side(entry: str, args) -> tuple[str, object]:
    """(row name, predict(path) -> top-1 index) for one row: "article" is the recipe, "default"
    shiwu with no flags, "backend[:precision]" shiwu with those settings (``args.file``: the
    reader's file that row loads)."""
    if entry == "article":
        if args.model:
            return (f"article recipe ({args.model.name}: torch eager, Resize 224x224)",
                    article_recipe(article_model(args.model, args.trust_model_code)))
        return "article recipe (torch eager, Resize 224x224)", article_recipe(get_model().build())
    own = dict(labels=args.labels, resize="squash", trust_model_code=args.trust_model_code) if args.model else {}
    backend, _, precision = entry.partition(":")
    chosen = {} if entry == "default" else {"backend": backend, "precision": precision or "fp32"}
    recognizer = Recognizer(str(args.file) if args.file else None, **chosen, **own)
    name = (f"shiwu {args.file.name + ' ' if args.file else ''}{'default ' if entry == 'default' else ''}"
            f"({recognizer.backend.name}, {recognizer.backend.precision})")
    return name, lambda path: recognizer.predict(path, topk=5)[0].index


def worker(args) -> int:
    """One row in its own process: load, warm up, then time every photo once per request."""
    side = {}

    def answer(request):
        if request is None:
            start = time.perf_counter()
            try:
                side["name"], side["predict"] = build_side(args.worker, args)
            except Exception as exc:  # noqa: BLE001 - e.g. torch cannot run an .onnx file: say so
                return {"error": f"{exc}"}
            load = time.perf_counter() - start
            for path in args.photos[:2]:  # warm-up: first calls allocate and pick kernels
                side["predict"](path)
            return {"name": side["name"], "load_s": load}
        times, answers = [], []
        for path in request["photos"]:
            start = time.perf_counter()
            answers.append(side["predict"](path))
            times.append(time.perf_counter() - start)
        return {"times": times, "answers": answers}

    return serve_requests(answer)


def spawn(entry: str, file: Path | None, argv: list[str]) -> JsonWorker:
    command = [sys.executable, __file__, *argv, "--worker", entry]
    return JsonWorker(command + (["--file", str(file)] if file else []))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=ROOT / "tests" / "data")
    parser.add_argument("--limit", type=int, default=0, help="at most this many photos (0: all)")
    parser.add_argument("--repeat", type=int, default=20, help="rounds; every row times every photo once a round")
    parser.add_argument("--backends", default="default,torch,onnxruntime,openvino,openvino:bf16,onnxruntime:int8",
                        help="comma-separated backend[:precision] list; 'default' is what a command "
                             "with no flags runs (--backend auto --precision auto)")
    parser.add_argument("--model", type=Path, default=None, help="the reader's model.pth or traced .pt")
    parser.add_argument("--labels", default=None, help="its label_map.json")
    parser.add_argument("--also", default="", help="other files of the same model for shiwu rows (.pt, .onnx)")
    parser.add_argument("--trust-model-code", action="store_true", help="allow unpickling model.pth")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--file", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    paths = sorted(p for p in args.images.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    args.photos = [str(p) for p in paths[:args.limit or None]]
    if args.worker:
        return worker(args)

    shared = ["--images", str(args.images), "--limit", str(args.limit)]
    if args.model:
        shared += ["--model", str(args.model)] + (["--labels", args.labels] if args.labels else [])
        shared += ["--trust-model-code"] if args.trust_model_code else []
    files = [args.model] + [Path(f) for f in args.also.split(",") if f] if args.model else [None]
    rows = [spawn("article", args.model, shared)]
    for file in files:
        for entry in args.backends.split(","):
            rows.append(spawn(entry, file, shared))
            if "error" in rows[-1].hello:
                print(f"skipped {file.name if file else 'default'} {entry}: {rows[-1].hello['error']}")
                rows.pop().close()
    times = {id(row): [] for row in rows}
    answers = {}
    for round_ in range(args.repeat):
        # each round starts with another row; the pause lets the last row's threads go idle
        for row in rows[round_ % len(rows):] + rows[:round_ % len(rows)]:
            time.sleep(0.05)
            reply = row.ask({"photos": args.photos})
            if "error" in reply:
                raise SystemExit(f"{row.hello['name']}: {reply['error']}")
            times[id(row)] += reply["times"]
            answers.setdefault(id(row), reply["answers"])
    for row in rows:
        row.close()

    reference = answers[id(rows[0])]
    base = statistics.median(times[id(rows[0])])
    print(f"{len(args.photos)} photos x {args.repeat} interleaved rounds, each row in its own process, "
          f"one image per call, decode included; torch {torch.__version__}{load_note()}\n")
    print_table(["path", "median ms", "p95 ms", "speed-up", "same top-1"],
                [[row.hello["name"], f"{statistics.median(times[id(row)]) * 1e3:.2f}",
                  f"{float(np.percentile(times[id(row)], 95)) * 1e3:.2f}",
                  speedup(base, statistics.median(times[id(row)])),
                  f"{sum(a == r for a, r in zip(answers[id(row)], reference))}/{len(args.photos)}"]
                 for row in rows])


if __name__ == "__main__":
    # the reader's own model is another table than the default model's: each keeps its own file
    sys.exit(record_run("vs_article_own_model" if "--model" in sys.argv else "vs_article", main))
