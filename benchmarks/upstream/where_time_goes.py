"""Where one photo's time goes in shiwu, for the 万物识别 ResNeSt-101 or Chinese-CLIP: decode,
resize (to the model's uint8 pixels), normalisation (the float copy, when done in numpy), the
model, and the whole ``predict``, median ms per photo over the photos and rounds.

    python benchmarks/upstream/where_time_goes.py --model-dir DIR [--backend onnxruntime]
        [--precision fp32] [--labels a,b,c] [--rounds 5]

Recorded in benchmarks/results/where_time_goes_{resnest,clip}.md.

The model is timed twice: on the uint8 pixels (normalised inside the graph: what ``predict``
does, backends/pixel_input.py) and on the float batch normalised in numpy; ``predict`` minus
decode, resize and model is what is left elsewhere (top-k, labels, Python). Also timed: JPEG
draft decoding to the size the model needs (not what shiwu does for these models: their
official pipelines decode at full size, and a draft decode gives other pixels).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared helper
from bench_common import ROOT, load_note, print_table, record_run  # noqa: E402


def median_ms(run, items, rounds: int) -> float:
    for item in items[:2]:
        run(item)
    times = []
    for _ in range(rounds):
        for item in items:
            start = time.perf_counter()
            run(item)
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--labels", default=None, help="Chinese-CLIP: its labels (comma-separated)")
    parser.add_argument("--images", type=Path, default=ROOT / "tests" / "data")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    from shiwu import Recognizer
    from shiwu.images import load_image

    options = {"labels": args.labels.split(",")} if args.labels else {}
    recognizer = Recognizer(args.model_dir, backend=args.backend, precision=args.precision,
                            batch_size=1, **options)
    pre, backend = recognizer.preprocessing, recognizer.backend
    photos = sorted(p for p in args.images.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    images = [load_image(p, min_size=pre.decode_min_size) for p in photos]
    pixels = [pre.pixels(image)[None] for image in images]
    floats = [pre.normalise(p) for p in pixels]
    r = args.rounds
    rows = {
        "decode (full size, as the official)": median_ms(lambda p: load_image(p, min_size=pre.decode_min_size), photos, r),
        "decode (JPEG draft to the size needed; not used)": median_ms(
            lambda p: load_image(p, min_size=pre.size), photos, r),
        "resize to uint8 pixels": median_ms(pre.pixels, images, r),
        "normalise in numpy (float path only)": median_ms(pre.normalise, pixels, r),
    }
    if getattr(backend, "pixels_in", False):
        rows["model on uint8 pixels (normalised in the graph)"] = median_ms(backend.run_pixels, pixels, r)
    rows["model on the float batch"] = median_ms(backend.run, floats, r)
    rows["predict, end to end"] = median_ms(lambda p: recognizer.predict(p, topk=5), photos, r)
    print(f"{recognizer.spec.description}; {backend.name} {backend.precision}, "
          f"{getattr(backend, 'threads', '?')} threads, pixels in the graph: {getattr(backend, 'pixels_in', False)}; "
          f"{len(photos)} photos x {r} rounds{load_note()}\n")
    print_table(["step", "median ms per photo"], [[k, f"{v:.2f}"] for k, v in rows.items()])
    return 0


def result_name(argv: list[str]) -> str:
    """One results file per model kind: where_time_goes_clip.md / where_time_goes_resnest.md."""
    folder = Path(argv[argv.index("--model-dir") + 1]) if "--model-dir" in argv[:-1] else Path(".")
    return "where_time_goes_" + ("clip" if (folder / "vision_model_config.json").is_file() else "resnest")


if __name__ == "__main__":
    sys.exit(record_run(result_name(sys.argv), main))
