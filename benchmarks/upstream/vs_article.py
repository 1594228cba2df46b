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
same model. Decode is included on both sides and the ratio is measured in this run. Usage:

    python benchmarks/upstream/vs_article.py [--repeat 5] [--backends torch,onnxruntime,openvino]
    python benchmarks/upstream/vs_article.py --model model.pth --labels label_map.json --trust-model-code \\
        --also traced_model_cpu.pt,model.onnx
"""

from __future__ import annotations

import argparse
import gc
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
from bench_common import ROOT, load_note, print_table, record_run, speedup  # noqa: E402

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


def time_per_image(predict, paths, repeat: int) -> tuple[list[float], list[int]]:
    for path in paths[:2]:  # warm-up: first calls allocate and pick kernels
        predict(path)
    times, answers = [], []
    for _ in range(repeat):
        for path in paths:
            start = time.perf_counter()
            answers.append(predict(path))
            times.append(time.perf_counter() - start)
    return times, answers[:len(paths)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=ROOT / "tests" / "data")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--backends", default="default,torch,onnxruntime,openvino,openvino:bf16,onnxruntime:int8",
                        help="comma-separated backend[:precision] list; 'default' is what a command "
                             "with no flags runs (--backend auto --precision auto)")
    parser.add_argument("--model", type=Path, default=None, help="the reader's model.pth or traced .pt")
    parser.add_argument("--labels", default=None, help="its label_map.json")
    parser.add_argument("--also", default="", help="other files of the same model for shiwu rows (.pt, .onnx)")
    parser.add_argument("--trust-model-code", action="store_true", help="allow unpickling model.pth")
    args = parser.parse_args()
    paths = sorted(p for p in args.images.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))

    default_threads = torch.get_num_threads()
    if args.model:
        baseline_model = article_model(args.model, args.trust_model_code)
        files = [args.model] + [Path(f) for f in args.also.split(",") if f]
        own = dict(labels=args.labels, resize="squash", trust_model_code=args.trust_model_code)
        title = f"article recipe ({args.model.name}: torch eager, Resize 224x224)"
    else:
        baseline_model, files, own = get_model().build(), [None], {}
        title = "article recipe (torch eager, Resize 224x224)"
    baseline, reference = time_per_image(article_recipe(baseline_model), paths, args.repeat)
    rows = [(title, baseline, len(paths))]
    for file in files:
        for entry in args.backends.split(","):
            backend, _, precision = entry.partition(":")
            model = str(file) if file else None
            chosen = {} if entry == "default" else {"backend": backend, "precision": precision or "fp32"}
            try:
                recognizer = Recognizer(model, **chosen, **own)
            except Exception as exc:  # noqa: BLE001 - e.g. torch cannot run an .onnx file: say so
                print(f"skipped {file.name if file else 'default'} {entry}: {exc}")
                continue
            times, answers = time_per_image(lambda p: recognizer.predict(p, topk=5)[0].index, paths,
                                            args.repeat)
            name = (f"shiwu {file.name + ' ' if file else ''}{'default ' if entry == 'default' else ''}"
                    f"({recognizer.backend.name}, {recognizer.backend.precision})")
            rows.append((name, times, sum(a == r for a, r in zip(answers, reference))))
            # an idle runtime's worker threads slowed the next rows 3x (OpenVINO before ONNX
            # Runtime: 24 ms instead of 8): each row's model goes before the next one loads
            del recognizer
            gc.collect()
            torch.set_num_threads(default_threads)

    base = statistics.median(baseline)
    print(f"{len(paths)} photos x {args.repeat} rounds, one image per call, decode included; "
          f"torch {torch.__version__}, {default_threads} default threads{load_note()}\n")
    print_table(["path", "median ms", "p95 ms", "speed-up", "same top-1"],
                [[name, f"{statistics.median(times) * 1e3:.2f}", f"{float(np.percentile(times, 95)) * 1e3:.2f}",
                  speedup(base, statistics.median(times)), f"{same}/{len(paths)}"]
                 for name, times, same in rows])

if __name__ == "__main__":
    sys.exit(record_run("vs_article", main))
