"""Where one ``predict`` of one photo spends its time, float path against uint8-in-graph path.

For each backend/precision: a warm Recognizer predicts the same ImageNet-sized JPEG over and
over; each round times the phases separately — decode (draft), crop (Pillow resize of the crop
window), to floats (numpy normalise + transpose, float path only), the model on that one photo,
top-5 — and the whole ``Recognizer.predict`` call, once through the float path (numpy
normalisation, as before) and once through the uint8 graph (as ``predict`` now does). Rounds are
interleaved across settings; medians are printed. The model alone in a tight loop is the floor.
Compare with ``benchmarks/upstream/vs_article.py`` (the article's recipe, end to end). Caution: the
float path opens a second ONNX Runtime session beside the uint8 one that predict uses, and each
session has its own spinning worker threads, so on 2 cores the model rows here run slower than
predict does alone (measured: 7.7 ms in a round against 4.6 ms in a tight loop); take per-call
end-to-end figures from vs_article.py, where each setting runs alone in its process. Usage:

    python benchmarks/single_photo.py [--photo ../shared/imagenet-dev/n01440764_tench.JPEG]
        [--settings onnxruntime:fp32,openvino:bf16,onnxruntime:int8] [--rounds 200] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from shiwu import Recognizer
from shiwu.postprocess import top_k
from shiwu.preprocess import to_chw

ROOT = Path(__file__).resolve().parent.parent


def default_photo() -> Path:
    for parent in ROOT.parents:
        folder = parent / "shared" / "imagenet-dev"
        if folder.is_dir():
            return sorted(folder.glob("*.JPEG"))[0]
    return ROOT / "tests" / "data" / "chelsea.jpg"


def one_round(recognizer: Recognizer, photo: Path) -> dict[str, float]:
    clock = time.perf_counter
    pre, backend = recognizer.preprocessing, recognizer.backend
    t0 = clock()
    image = recognizer.load(photo)
    t1 = clock()
    cropped = pre.crop(image)
    t2 = clock()
    floats = to_chw(cropped, pre.mean, pre.std)[None]
    t3 = clock()
    logits = backend.run(floats)
    t4 = clock()
    top_k(logits, recognizer.labels, 5)
    t5 = clock()
    pixels = pre.pixels(image)[None]
    t6 = clock()
    if backend.pixels_in:
        backend.run_pixels(pixels)
    t7 = clock()
    recognizer.predict(photo)
    t8 = clock()
    return {"decode": t1 - t0, "crop": t2 - t1, "to floats": t3 - t2, "model (floats)": t4 - t3,
            "top-5": t5 - t4, "model (uint8 in graph)": (t7 - t6) if backend.pixels_in else float("nan"),
            "predict() end to end": t8 - t7}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photo", type=Path, default=default_photo())
    parser.add_argument("--settings", default="onnxruntime:fp32,openvino:fp32,openvino:bf16,onnxruntime:int8")
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()

    recognizers = {}
    for setting in args.settings.split(","):
        backend, precision = setting.split(":")
        try:
            recognizers[setting] = Recognizer(backend=backend, precision=precision, threads=args.threads)
        except Exception as exc:  # noqa: BLE001 - e.g. int8 refused, bf16 on a CPU without it
            print(f"{setting}: unavailable: {exc}")
    for recognizer in recognizers.values():
        for _ in range(20):  # warm-up: first calls allocate, pick kernels, open the uint8 graph
            one_round(recognizer, args.photo)
    samples = {s: [] for s in recognizers}
    for _ in range(args.rounds):
        for setting, recognizer in recognizers.items():
            samples[setting].append(one_round(recognizer, args.photo))
    floor = {}
    for setting, recognizer in recognizers.items():  # the model alone, tight loop
        pixels = recognizer.preprocessing.pixels(recognizer.load(args.photo))[None]
        times = []
        for _ in range(args.rounds):
            start = time.perf_counter()
            recognizer.backend.run_pixels(pixels) if recognizer.backend.pixels_in else recognizer.logits(
                recognizer.preprocessing.normalise(pixels))
            times.append(time.perf_counter() - start)
        floor[setting] = statistics.median(times)

    print(f"{args.photo.name}, median ms of {args.rounds} interleaved rounds")
    phases = list(next(iter(samples.values()))[0]) if samples else []
    print(f"{'phase':<24}" + "".join(f"{s:>18}" for s in samples))
    for phase in phases:
        print(f"{phase:<24}" + "".join(f"{1e3 * statistics.median(r[phase] for r in rows):18.2f}"
                                       for rows in samples.values()))
    print(f"{'model, tight loop':<24}" + "".join(f"{1e3 * floor[s]:18.2f}" for s in samples))


if __name__ == "__main__":
    main()
