"""The official ModelScope Chinese-CLIP against shiwu, zero-shot, end to end, on one model directory.

    python benchmarks/upstream/vs_modelscope_clip.py [--model-dir DIR] [--rounds 5] [--cache DIR]
        [--backends default,onnxruntime,openvino,openvino:bf16,onnxruntime:int8,openvino:int8]
        [--labels 快递柜,电饭煲,...|FILE] [--prompt "一张{}的照片。"] [--threads N] [--official-python PY]

The official side is what the model card of ``damo/multi-modal_clip-vit-base-patch16_zh`` does:
``CLIPForMultiModalEmbedding(DIR)`` (fp16 weights cast to fp32 on a CPU), the label texts
tokenized as ``CLIPPreprocessor.tokenize`` does (``[CLS]`` + ``FullTokenizer`` ids + ``[SEP]``,
context 52) and encoded once, then per photo: ModelScope's ``load_image`` (``File.read``,
``Image.open``, ``ImageOps.exif_transpose``, ``convert("RGB")``), the inference transform of
``CLIPPreprocessor`` (``Resize((224, 224))`` bicubic, ``_convert_to_rgb``, ``ToTensor``,
``Normalize`` with the CLIP mean/std), ``model({"img": x})["img_embedding"]``, logits =
embedding / ``model.temperature`` @ text embeddings, softmax. ``modelscope/preprocessors/
multi_modal.py`` is not imported (it imports decord, timm and torchvision for its video and
training paths); its image transform is re-implemented here from torchvision's code for a PIL
image (``Resize`` on a PIL image is ``img.resize((R, R), BICUBIC)``; ``ToTensor`` is
``from_numpy(array).permute(2, 0, 1).float().div(255)``), as ``tests/models/test_clip_preprocess.py``
does. The script checks that these input tensors equal shiwu's.

shiwu: ``Recognizer(DIR, labels=..., prompt=..., backend=..., precision=..., batch_size=1)``,
``predict(path)``: decode, preprocess, inference of the image tower with the zero-shot head, softmax.

Every contender runs in its own long-lived process and the photos are sent to them in
interleaved rounds (benchmarks/upstream/contenders.py); medians per photo. Each shiwu row is
first started once alone on the given cache (``first load s``: the label texts through the text
tower, the export, int8 calibration, the accuracy verdicts, auto's measurement); the timed process
then starts as a user's second run does (``load s``). ``load s`` counts from before the imports
of torch / modelscope / shiwu to ready-to-predict, the official one including its encoding of
the label texts (it has no cache).

Rows: the official model; shiwu as a user runs it with no flags (``default`` = ``--backend auto
--precision auto``), naming the runtime and precision it chose and how the accuracy policy
accepted it (``accepted by``: the label-free estimate for this model, backends/estimate.py, or
``shiwu tune --eval``'s saved choice); then explicit settings. bf16 needs AVX-512 BF16 / AMX;
int8 is offered only when the policy accepts it. A refused setting is a row that says why; a
refused int8 model is still timed, marked NOT OFFERED (``--no-refused``: not).

Agreement: top-1 of every contender against the official, and of each reduced precision against
shiwu fp32 (the first fp32 row), with the largest difference in probability. On the SYNTHETIC
directory (random weights) the label probabilities are close to each other, so top-1 agreement
is weak evidence there; the probability differences and the equal input tensors are the stronger.

The official model needs ``modelscope`` (its ``models/multi_modal/clip`` package) with ``addict``
and ``six``, nothing else: no torchvision, no opencv. The project's test extra installs them, so
the project venv runs both sides::

    python3.11 -m venv .venv && . .venv/bin/activate
    pip install torch==2.13.0 && pip install -e ".[test]" && pip install --no-deps cn-clip
    # or, without the test extra: pip install modelscope==1.40.2 addict six

Default DIR: a SYNTHETIC ViT-B/16 directory in the official format (random weights, the real
sizes), written on first use by ``python -m shiwu.models.synthetic_clip DIR``.

benchmarks/results/vs_modelscope_clip.md has the last recorded run.
"""

from __future__ import annotations

import argparse
import io
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

DEFAULT_DIR = Path(tempfile.gettempdir()) / "shiwu-bench-synthetic-clip-vit-base-patch16_zh"
DEFAULT_LABELS = ("快递柜,电饭煲,油菜花田,虎斑猫,骏马,咖啡,硬币,宇航员,火箭,摩托车,星空,眼底照片,"
                  "照相机,海边的日落,自行车,熊猫")
DEFAULT_BACKENDS = "default,onnxruntime,openvino,openvino:bf16,onnxruntime:int8,openvino:int8"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CONTEXT_LENGTH = 52


def label_list(labels: str) -> list[str]:
    path = Path(labels).expanduser()
    if path.is_file():
        return [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    return [t.strip() for t in labels.replace("，", ",").split(",") if t.strip()]


def distinct_photos(folder: Path) -> list[Path]:
    """One file per photo: chelsea.jpg and chelsea.png are the same picture, keep the first."""
    seen, photos = set(), []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in (".jpg", ".jpeg", ".png") and path.stem not in seen:
            seen.add(path.stem)
            photos.append(path)
    return photos


# ----------------------------------------------------------------------------- the contenders
# Each runs in its own process: `python vs_modelscope_clip.py --worker official|shiwu ...`, reads
# one JSON request per line on stdin, answers one JSON line on the original stdout.

def official_side(model_dir: Path, labels: list[str], prompt: str, threads: int | None):
    """The model card's recipe; returns (name, predict(path) -> probabilities, inputs(path))."""
    import numpy as np
    import torch
    from modelscope.models.multi_modal.clip.model import CLIPForMultiModalEmbedding
    from PIL import Image, ImageOps

    if threads:
        torch.set_num_threads(threads)
    model = CLIPForMultiModalEmbedding(str(model_dir))
    model.eval()
    resolution = model.model_info["image_resolution"]
    tokenizer = model.tokenizer

    def tokenize(texts):  # CLIPPreprocessor.tokenize
        result = torch.zeros(len(texts), CONTEXT_LENGTH, dtype=torch.long)
        for i, text in enumerate(texts):
            tokens = ([tokenizer.vocab["[CLS]"]]
                      + tokenizer.convert_tokens_to_ids(tokenizer.tokenize(text))[:CONTEXT_LENGTH - 2]
                      + [tokenizer.vocab["[SEP]"]])
            result[i, :len(tokens)] = torch.tensor(tokens)
        return result

    with torch.no_grad():
        text_embedding = model({"text": tokenize([prompt.replace("{}", t) for t in labels])})["text_embedding"]
    mean = torch.tensor(CLIP_MEAN)[:, None, None]
    std = torch.tensor(CLIP_STD)[:, None, None]

    def load_image(path):  # modelscope.preprocessors.image.load_image, pillow backend
        with open(path, "rb") as f:  # File.read of a local path
            data = f.read()
        with io.BytesIO(data) as infile:
            image = Image.open(infile)
            image = ImageOps.exif_transpose(image)
            return image.convert("RGB")

    def transform(image):  # CLIPPreprocessor._build_image_transform, inference mode
        image = image.resize((resolution, resolution), Image.BICUBIC)   # Resize((R, R), BICUBIC)
        image = image.convert("RGB")                                     # _convert_to_rgb
        tensor = torch.from_numpy(np.array(image, np.uint8, copy=True))  # ToTensor
        tensor = tensor.view(image.size[1], image.size[0], 3).permute(2, 0, 1).contiguous().float().div(255)
        return tensor.sub_(mean).div_(std)                               # Normalize

    def predict(path):
        with torch.no_grad():
            image_embedding = model({"img": transform(load_image(path)).unsqueeze(0)})["img_embedding"]
            logits = (image_embedding / model.temperature) @ text_embedding.t()
            return logits.softmax(dim=-1)[0].tolist()

    name = f"official ModelScope CLIPForMultiModalEmbedding (torch {torch.__version__} eager fp32)"
    return name, predict, lambda path: transform(load_image(path)).numpy()


def shiwu_side(model_dir: Path, labels: list[str], prompt: str, threads: int | None,
               entry: str, refused: bool = False):
    recognizer, info = shiwu_recognizer(model_dir, entry, threads, refused, labels=labels, prompt=prompt)
    if entry == DEFAULT_ENTRY:
        info.update(auto_skipped(recognizer.spec.name))

    def predict(path):
        probs = [0.0] * len(labels)
        for p in recognizer.predict(path, topk=len(labels)):
            probs[p.index] = p.score
        return probs

    name = (f"shiwu {'default: ' if entry == DEFAULT_ENTRY else ''}{info['runtime']} {info['precision']}"
            + (" (NOT OFFERED)" if refused else ""))
    return name, predict, info, None


def official_worker(args):
    name, predict, inputs = official_side(args.model_dir, label_list(args.labels), args.prompt, args.threads)

    def finish(request):  # (after the peak RSS) the input check, which loads shiwu
        import numpy as np

        from shiwu.images import load_image
        from shiwu.models.clip_files import clip_preprocessing

        pre = clip_preprocessing()
        return {"input_diff": {
            Path(p).name: float(np.abs(inputs(p) - pre(load_image(p, min_size=pre.decode_min_size))).max())
            for p in request["photos"]}}

    return name, predict, {"threads": args.threads}, finish


# ----------------------------------------------------------------------------- coordinator

def top1(probs) -> int:
    return max(range(len(probs)), key=probs.__getitem__)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_DIR,
                        help=f"Chinese-CLIP model directory (default: synthetic ViT-B/16, written if missing: {DEFAULT_DIR})")
    parser.add_argument("--images", type=Path, default=ROOT / "tests" / "data")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds over the photos (default 5)")
    parser.add_argument("--backends", default=DEFAULT_BACKENDS,
                        help=f"shiwu rows, backend[:precision] or 'default' (default {DEFAULT_BACKENDS})")
    parser.add_argument("--labels", default=DEFAULT_LABELS, help="comma-separated labels or a file, one per line")
    parser.add_argument("--prompt", default="一张{}的照片。", help="for both sides (default 一张{}的照片。)")
    parser.add_argument("--threads", type=int, default=None, help="threads of every side (default: each its own; torch: all cores)")
    parser.add_argument("--cache", type=Path, default=None,
                        help="shiwu cache to use and keep (default: a fresh one, deleted at the end, so 'first load' is a first load)")
    parser.add_argument("--official-python", default=sys.executable,
                        help="interpreter with modelscope, addict and six (default: this one)")
    parser.add_argument("--no-refused", action="store_true",
                        help="do not time an int8 model that shiwu refuses (the accuracy policy)")
    parser.add_argument("--refused", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker", choices=["official", "shiwu"], help=argparse.SUPPRESS)
    parser.add_argument("--entry", default=DEFAULT_ENTRY, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "official":
        return serve(lambda: official_worker(args))
    if args.worker == "shiwu":
        return serve(lambda: shiwu_side(args.model_dir, label_list(args.labels), args.prompt, args.threads,
                                        args.entry, args.refused))

    photos = distinct_photos(args.images)
    labels = label_list(args.labels)
    if not (args.model_dir / "pytorch_model.bin").is_file():
        print(f"writing a SYNTHETIC Chinese-CLIP ViT-B/16 to {args.model_dir} (once) ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "shiwu.models.synthetic_clip", str(args.model_dir)], check=True)
    scratch = None
    if args.cache is None:
        scratch = tempfile.mkdtemp(prefix="shiwu-bench-cache-")
    env = {**os.environ, "SHIWU_CACHE": str(args.cache or scratch),
           "SHIWU_CONFIG": os.devnull}  # no tuned settings: the rows are what the options say
    try:
        return compare(args, photos, labels, env)
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)


def compare(args, photos, labels, env) -> int:
    def command(python, side, *extra):
        threads = ["--threads", str(args.threads)] if args.threads else []
        return [python, __file__, "--worker", side, "--model-dir", str(args.model_dir),
                "--labels", args.labels, "--prompt", args.prompt, *threads, *extra]

    entries = [e for e in args.backends.split(",") if e]
    first_load, refused = {}, {}
    for entry in entries:  # once each, alone, to fill the cache (export, text, int8, verdicts, auto)
        print(f"first start of shiwu {entry} (cache: {env['SHIWU_CACHE']}) ...", file=sys.stderr)
        contender = Contender(command(sys.executable, "shiwu", "--entry", entry), entry, env)
        if "error" in contender.hello:
            refused[entry] = contender.hello["error"]
        else:
            first_load[entry] = contender.hello["load_s"]
        contender.close()

    below_floor = [] if args.no_refused else [e for e in entries if "is not offered" in refused.get(e, "")]
    from ceilings import ceilings_in_child  # the GEMM ceilings now and after the rounds (report)
    from shiwu.cpu import default_threads

    args.early_ceilings = ceilings_in_child(args.threads or default_threads())
    print("starting the official model ...", file=sys.stderr)
    official = Contender(command(args.official_python, "official"), "official", env)
    if "error" in official.hello:
        print("the official model did not start:\n" + official.hello["error"], file=sys.stderr)
        return 1
    contenders = [official]
    contenders += start_shiwu_sides(command, entries, refused, below_floor, env=env)
    interleave(contenders, photos, args.rounds)
    ends = {c.entry: c.close({"photos": [str(p) for p in photos]}) for c in contenders}
    report(args, photos, labels, contenders, ends, first_load, refused)
    return 0


def report(args, photos, labels, contenders, ends, first_load, refused) -> None:
    config = json.loads((args.model_dir / "configuration.json").read_text(encoding="utf-8"))
    vision = json.loads((args.model_dir / "vision_model_config.json").read_text(encoding="utf-8"))
    kind = "SYNTHETIC (random weights)" if config.get("synthetic") else "real"
    load_avg = " / ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"{kind} Chinese-CLIP ViT (patch {vision['vision_patch_size']}, width {vision['vision_width']}, "
          f"{vision['vision_layers']} layers, {vision['image_resolution']}px), {args.model_dir}")
    print(f"{len(labels)} labels, prompt {args.prompt!r}; {len(photos)} distinct photos x {args.rounds} rounds, "
          f"interleaved, one photo per call, decode + preprocess + inference; each side in its own process; "
          f"{os.cpu_count()} CPUs, threads {args.threads or 'each side its own'}; load average at the end "
          f"{load_avg}\n")

    official, shiwu = contenders[0], contenders[1:]
    diffs = ends["official"].get("input_diff", {})
    if diffs:
        worst = max(diffs.items(), key=lambda kv: kv[1])
        rgb = [v for k, v in diffs.items() if not k.endswith(".png")]
        print(f"input tensors, official transform vs shiwu: max |Δ| {max(rgb):.1e} over the JPEG photos; "
              f"largest {worst[1]:.2f} on {worst[0]} "
              "(a PNG with alpha: shiwu puts it on white, load_image drops the alpha)\n" if worst[1] > 1e-4 else
              f"input tensors, official transform vs shiwu: max |Δ| {worst[1]:.1e} over {len(diffs)} photos\n")

    reference = next((c for c in shiwu if c.hello.get("precision") == "fp32"), None)

    def agree(a, b):
        same = sum(top1(a.answers[p.name]) == top1(b.answers[p.name]) for p in photos)
        worst = max(abs(x - y) for p in photos for x, y in zip(a.answers[p.name], b.answers[p.name]))
        return f"{same}/{len(photos)}", worst

    base, base_cpu = official.median, statistics.median(official.cpu)
    base_rss = ends["official"]["peak_rss_mb"]
    rows = []
    for c in contenders:
        p95 = sorted(c.times)[int(0.95 * (len(c.times) - 1))]
        same_off, d_off = agree(c, official) if c is not official else ("-", 0.0)
        same_ref, d_ref = agree(c, reference) if reference and c is not official and c is not reference else ("-", None)
        rows.append([c.name, f"{c.median * 1e3:.1f}", f"{p95 * 1e3:.1f}", f"{statistics.median(c.cpu) * 1e3:.0f}",
                     f"{c.hello['load_s']:.2f}", f"{first_load[c.entry]:.1f}" if c.entry in first_load else "-",
                     f"{ends[c.entry]['peak_rss_mb']:.0f}", f"{base / c.median:.2f}x",
                     f"{base_cpu / statistics.median(c.cpu):.2f}x", f"{ends[c.entry]['peak_rss_mb'] / base_rss:.0%}",
                     same_off, "-" if c is official else f"{d_off:.1e}",
                     same_ref, "-" if d_ref is None else f"{d_ref:.1e}", c.hello.get("accepted_by", "-")])
    for entry, why in refused.items():
        if not any(c.entry == entry for c in contenders):
            rows.append([f"shiwu {entry}"] + ["-"] * 13 + [f"refused: {refusal(why)}"])
    print_table(["side", "median ms", "p95 ms", "CPU ms", "load s", "first load s", "peak RSS MiB",
                    "speed-up", "CPU ratio", "RSS vs official", "top-1 = official", "max |Δp| official",
                    "top-1 = shiwu fp32", "max |Δp| fp32", "accepted by"], rows)
    default = next((c for c in shiwu if c.entry == DEFAULT_ENTRY), None)
    if default is not None and default.hello.get("skipped"):
        print("\nthe default (--backend auto --precision auto) left out: "
              + "; ".join(f"{k}: {v}" for k, v in default.hello["skipped"].items()))

    print("\nspeed-up = official median wall time per photo / this one (same run, interleaved); CPU ratio = "
          "the same for CPU time of all threads;\nRSS = ru_maxrss of each side's own process; load s = "
          "imports + model (+ the official's text encoding) to ready, shiwu with its cache warm;\nfirst load s "
          "= shiwu's first start on the cache given (text tower, export, int8 calibration, verdicts).")
    if reference:
        print(f"top-1 = shiwu fp32 and max |Δp| fp32: against {reference.name}.")
    # imported here: the official side runs this file in its own Python, which has no shiwu
    from ceilings import speed_up_bounds
    from shiwu.cpu import default_threads

    bounds = speed_up_bounds(args.model_dir, official.median, args.threads or default_threads(),
                              earlier=args.early_ceilings)
    print("\n".join([""] + goal_lines(official, shiwu, 3, 6, bounds)))
    if shiwu:
        rss = max(ends[c.entry]["peak_rss_mb"] for c in shiwu) / base_rss
        print(f"goal peak RSS <= 60% of the official: {'met' if rss <= 0.6 else 'NOT met'} "
              f"(largest shiwu side {rss:.0%})")


if __name__ == "__main__":
    sys.exit(record_run("vs_modelscope_clip", main))
