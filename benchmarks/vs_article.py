"""The article's CPU recipe against shiwu's predict path, end to end, one photo at a time.

The article's recipe (推理.py): torch eager, ``Resize((224, 224))`` without a crop, ImageNet
mean/std, ``torch.no_grad()``, default threads, one image per call, ``torch.max`` for the top-1.
shiwu: ``Recognizer.predict(path, topk=5)`` — decode (with JPEG draft), resize + centre crop,
inference on the chosen backend, top-5 softmax with Chinese labels.

Both sides run the same EfficientNet-Lite0 weights on the same photos, decode included, and
the ratio is measured in this run. Usage:

    python benchmarks/vs_article.py [--repeat 5] [--backends torch] [--images DIR]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from shiwu import Recognizer
from shiwu.models.registry import get_model

ROOT = Path(__file__).resolve().parent.parent
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


def time_per_image(predict, paths, repeat: int) -> list[float]:
    for path in paths[:2]:  # warm-up: first calls allocate and pick kernels
        predict(path)
    times = []
    for _ in range(repeat):
        for path in paths:
            start = time.perf_counter()
            predict(path)
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=ROOT / "tests" / "data")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--backends", default="torch,onnxruntime,openvino,openvino:bf16",
                        help="comma-separated backend[:precision] list")
    args = parser.parse_args()
    paths = sorted(p for p in args.images.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))

    rows = []
    default_threads = torch.get_num_threads()
    baseline = time_per_image(article_recipe(get_model().build()), paths, args.repeat)
    rows.append(("article recipe (torch eager, Resize 224x224)", baseline))
    for entry in args.backends.split(","):
        backend, _, precision = entry.partition(":")
        recognizer = Recognizer(backend=backend, precision=precision or "fp32")
        times = time_per_image(lambda p: recognizer.predict(p, topk=5), paths, args.repeat)
        rows.append((f"shiwu predict ({recognizer.backend.name}, {recognizer.backend.precision})", times))
        torch.set_num_threads(default_threads)

    base = statistics.median(baseline)
    print(f"{len(paths)} photos x {args.repeat} rounds, one image per call, decode included; "
          f"torch {torch.__version__}, {default_threads} default threads\n")
    print(f"| {'path':<52} | {'median ms':>9} | {'p95 ms':>7} | {'speed-up':>8} |")
    print(f"|{'-' * 54}|{'-' * 11}|{'-' * 9}|{'-' * 10}|")
    for name, times in rows:
        median = statistics.median(times)
        p95 = float(np.percentile(times, 95))
        print(f"| {name:<52} | {median * 1e3:9.2f} | {p95 * 1e3:7.2f} | {base / median:7.2f}x |")


if __name__ == "__main__":
    main()
