"""The official ModelScope Chinese-CLIP against shiwu, zero-shot, end to end, on one model directory.

    python benchmarks/upstream/vs_modelscope_clip.py [--model-dir DIR] [--rounds 5]
        [--backends torch,onnxruntime,openvino,openvino:bf16,openvino:int8]
        [--labels 快递柜,电饭煲,...|FILE] [--prompt "一张{}的照片。"] [--threads N] [--cache DIR]

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

Every contender runs in its own process (so load time and peak RSS are its own) and stays alive;
the photos are sent to them interleaved: photo 1 to each contender in turn, photo 2 ..., the
order of contenders rotated per photo, several rounds. On a machine that other work shares, the
load then drifts over all contenders alike, and the ratios hold up better than the absolute
figures. Each shiwu configuration is first started once in a throw-away process with an empty
cache (``first load s``: the label texts through the text tower, and for ONNX Runtime /
OpenVINO the export, for int8 the calibration and the agreement check); the timed process then
starts as a user's second run does (``load s``). ``load s`` counts from before the imports of
torch / modelscope / shiwu to ready-to-predict, the official one including its encoding of the
label texts (it has no cache).

Reduced precisions: shiwu refuses bf16 on a CPU without bf16 instructions (AVX-512 BF16 / AMX),
and offers int8 only if its top-1 agrees with fp32 on 99% of photo views; a refusal is printed
with its reason. An int8 model that shiwu built but refused (the random weights of the synthetic
directory miss the floor) is still timed, in a row marked "NOT OFFERED", so that the table shows
what int8 would cost and how far it agrees; ``--no-refused`` leaves it out. ``onnxruntime:int8``
is not in the default list: ONNX Runtime's percentile calibration keeps every activation of all
128 calibration views in memory, which for ViT-B/16 grew past 22 GB and was killed (out of
memory) on the development machine.

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

Measured 2026-12-02 on the 2-core development machine, then an AMD EPYC Zen 3 (AVX2 only: no
AVX-512, no bf16), shared with other work (load average 2.5 -> 3.9), defaults, 16 labels,
10 photos x 5 rounds, median per photo (the README has the whole table):

    official CLIPForMultiModalEmbedding   2409.6 ms  1.00x  peak RSS 1419 MiB
    shiwu torch fp32                      2298.2 ms  1.05x            802 MiB (56%)  top-1 10/10
    shiwu onnxruntime fp32                 820.7 ms  2.94x            629 MiB (44%)  top-1 10/10
    shiwu openvino fp32                    938.2 ms  2.57x            806 MiB (57%)  top-1 10/10
    shiwu openvino bf16                    refused: no bf16 instructions on this CPU
    shiwu openvino int8 (NOT OFFERED)      953.2 ms  2.53x            339 MiB (24%)  top-1  5/10

The run before it (load 5.8 -> 2.8): onnxruntime fp32 1.55x, openvino fp32 1.37x: on a busy
machine the ratios move between runs by that much.
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
import time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared helper
from bench_common import ROOT, record_run, peak_rss_mb, current_rss_mb  # noqa: E402

DEFAULT_DIR = Path(tempfile.gettempdir()) / "shiwu-bench-synthetic-clip-vit-base-patch16_zh"
DEFAULT_LABELS = ("快递柜,电饭煲,油菜花田,虎斑猫,骏马,咖啡,硬币,宇航员,火箭,摩托车,星空,眼底照片,"
                  "照相机,海边的日落,自行车,熊猫")
DEFAULT_BACKENDS = "torch,onnxruntime,openvino,openvino:bf16,openvino:int8"
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
               backend: str, precision: str, refused: bool = False):
    from shiwu import Recognizer

    if refused:  # the int8 model is built and cached, but refused by the accuracy policy: time it anyway
        from shiwu.backends import policy

        policy.require = lambda *args, **kwargs: None

    recognizer = Recognizer(str(model_dir), labels=labels, prompt=prompt, backend=backend,
                            precision=precision, threads=threads, batch_size=1)

    def predict(path):
        probs = [0.0] * len(labels)
        for p in recognizer.predict(path, topk=len(labels)):
            probs[p.index] = p.score
        return probs

    name = f"shiwu {recognizer.backend.name} {recognizer.backend.precision}"
    return name + (" (NOT OFFERED: below the agreement floor)" if refused else ""), predict, None


def worker(args) -> int:
    start = time.perf_counter()
    answer = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # anything the libraries print goes to stderr, not into the answers
    labels = label_list(args.labels)
    try:
        if args.worker == "official":
            name, predict, inputs = official_side(args.model_dir, labels, args.prompt, args.threads)
        else:
            backend, _, precision = args.backend.partition(":")
            name, predict, inputs = shiwu_side(args.model_dir, labels, args.prompt, args.threads,
                                               backend, precision or "fp32", args.refused)
    except Exception as exc:  # noqa: BLE001 - e.g. int8 refused: the coordinator prints why
        answer.write(json.dumps({"error": f"{type(exc).__name__}: {exc}"}, ensure_ascii=False) + "\n")
        answer.flush()
        return 0
    load = time.perf_counter() - start

    def say(message):
        answer.write(json.dumps(message, ensure_ascii=False) + "\n")
        answer.flush()

    say({"name": name, "load_s": load, "rss_loaded_mb": current_rss_mb()})
    for line in sys.stdin:
        request = json.loads(line)
        if "photo" in request:
            wall, cpu = time.perf_counter(), time.process_time()
            probs = predict(request["photo"])
            say({"s": time.perf_counter() - wall, "cpu": time.process_time() - cpu, "probs": probs})
        else:  # quit: the peak first, then (official only) the input check, which loads shiwu
            reply = {"peak_rss_mb": peak_rss_mb()}
            if inputs is not None:
                import numpy as np

                from shiwu.images import load_image
                from shiwu.models.clip_files import clip_preprocessing

                pre = clip_preprocessing()
                reply["input_diff"] = {
                    Path(p).name: float(np.abs(inputs(p) - pre(load_image(p, min_size=pre.decode_min_size))).max())
                    for p in request["photos"]}
            say(reply)
            break
    return 0


class Contender:
    def __init__(self, args, side: str, backend: str = "", env=None, refused: bool = False):
        self.stderr = tempfile.TemporaryFile()
        command = [sys.executable, __file__, "--worker", side, "--model-dir", str(args.model_dir),
                   "--labels", args.labels, "--prompt", args.prompt]
        if backend:
            command += ["--backend", backend]
        if args.threads:
            command += ["--threads", str(args.threads)]
        if refused:
            command += ["--refused"]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=self.stderr, text=True, encoding="utf-8", env=env)
        self.entry = backend or "official"
        self.refused = refused
        self.hello = self.ask(None)
        self.name = self.hello.get("name", self.entry)
        self.times, self.cpu, self.probs = [], [], {}

    def ask(self, request):
        if request is not None:
            self.process.stdin.write(json.dumps(request, ensure_ascii=False) + "\n")
            self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            self.process.wait()
            self.stderr.seek(0)
            tail = self.stderr.read().decode("utf-8", "replace")[-3000:]
            return {"error": f"worker exited ({self.process.returncode}):\n{tail}"}
        return json.loads(line)

    def close(self, photos) -> dict:
        reply = {}
        if self.process.poll() is None:
            try:
                reply = self.ask({"quit": True, "photos": [str(p) for p in photos]})
            except BrokenPipeError:
                pass
        self.process.wait()
        self.stderr.close()
        return reply


# ----------------------------------------------------------------------------- coordinator

def top1(probs) -> int:
    return max(range(len(probs)), key=probs.__getitem__)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_DIR,
                        help=f"Chinese-CLIP model directory (default: synthetic ViT-B/16, written if missing: {DEFAULT_DIR})")
    parser.add_argument("--images", type=Path, default=ROOT / "tests" / "data")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds over the photos (default 5)")
    parser.add_argument("--backends", default=DEFAULT_BACKENDS, help=f"shiwu backend[:precision] list (default {DEFAULT_BACKENDS})")
    parser.add_argument("--labels", default=DEFAULT_LABELS, help="comma-separated labels or a file, one per line")
    parser.add_argument("--prompt", default="一张{}的照片。", help="for both sides (default 一张{}的照片。)")
    parser.add_argument("--threads", type=int, default=None, help="threads of every side (default: each its own; torch: all cores)")
    parser.add_argument("--cache", type=Path, default=None,
                        help="shiwu cache to use and keep (default: a fresh one, deleted at the end, so 'first load' is a first load)")
    parser.add_argument("--no-refused", action="store_true",
                        help="do not time an int8 model that shiwu refuses (below its agreement floor)")
    parser.add_argument("--refused", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker", choices=["official", "shiwu"], help=argparse.SUPPRESS)
    parser.add_argument("--backend", default="torch", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    photos = distinct_photos(args.images)
    labels = label_list(args.labels)
    if not (args.model_dir / "pytorch_model.bin").is_file():
        print(f"writing a SYNTHETIC Chinese-CLIP ViT-B/16 to {args.model_dir} (once) ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "shiwu.models.synthetic_clip", str(args.model_dir)], check=True)
    scratch = None
    if args.cache is None:
        scratch = tempfile.mkdtemp(prefix="shiwu-bench-cache-")
    env = {**os.environ, "SHIWU_CACHE": str(args.cache or scratch),
           "SHIWU_CONFIG": os.devnull}  # no tuned settings: every option is given anyway
    try:
        return compare(args, photos, labels, env)
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)


def compare(args, photos, labels, env) -> int:
    entries = [e for e in args.backends.split(",") if e]
    first_load, refused = {}, {}
    for entry in entries:  # once each, alone, to fill the cache (export, text, int8 check)
        print(f"first start of shiwu {entry} (cache: {env['SHIWU_CACHE']}) ...", file=sys.stderr)
        contender = Contender(args, "shiwu", entry, env)
        if "error" in contender.hello:
            refused[entry] = contender.hello["error"]
        else:
            first_load[entry] = contender.hello["load_s"]
        contender.close(photos)

    below_floor = [] if args.no_refused else [e for e in entries if "is not offered" in refused.get(e, "")]
    contenders = []
    for side, entry in ([("official", "")] + [("shiwu", e) for e in entries if e not in refused]
                        + [("shiwu", e) for e in below_floor]):
        print(f"starting {entry or 'official'} ...", file=sys.stderr)
        contender = Contender(args, side, entry, env, refused=entry in below_floor)
        if "error" in contender.hello:
            refused.setdefault(entry or "official", contender.hello["error"])
            contender.close(photos)
            continue
        contenders.append(contender)
    if not contenders or contenders[0].entry != "official":
        print("the official model did not start:\n" + refused.get("official", "?"), file=sys.stderr)
        return 1

    for contender in contenders:  # warm-up: first calls allocate and pick kernels
        for path in photos[:2]:
            contender.ask({"photo": str(path)})
    for round_ in range(args.rounds):
        for i, path in enumerate(photos):
            shift = (round_ * len(photos) + i) % len(contenders)
            for contender in contenders[shift:] + contenders[:shift]:
                reply = contender.ask({"photo": str(path)})
                if "error" in reply:
                    raise SystemExit(f"{contender.name} failed on {path.name}: {reply['error']}")
                contender.times.append(reply["s"])
                contender.cpu.append(reply["cpu"])
                contender.probs[path.name] = reply["probs"]
                time.sleep(0.02)  # let the last one's worker threads go idle before the next
    ends = {c.entry: c.close(photos) for c in contenders}
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

    official = contenders[0]
    diffs = ends["official"].get("input_diff", {})
    if diffs:
        worst = max(diffs.items(), key=lambda kv: kv[1])
        rgb = [v for k, v in diffs.items() if not k.endswith(".png")]
        print(f"input tensors, official transform vs shiwu: max |Δ| {max(rgb):.1e} over the JPEG photos; "
              f"largest {worst[1]:.2f} on {worst[0]} "
              "(a PNG with alpha: shiwu puts it on white, load_image drops the alpha)\n" if worst[1] > 1e-4 else
              f"input tensors, official transform vs shiwu: max |Δ| {worst[1]:.1e} over {len(diffs)} photos\n")

    reference = next((c for c in contenders[1:] if c.entry.partition(":")[2] in ("", "fp32")), None)

    def agree(a, b):
        same = sum(top1(a.probs[p.name]) == top1(b.probs[p.name]) for p in photos)
        worst = max(abs(x - y) for p in photos for x, y in zip(a.probs[p.name], b.probs[p.name]))
        return f"{same}/{len(photos)}", worst

    base = statistics.median(official.times)
    base_cpu = statistics.median(official.cpu)
    base_rss = ends["official"]["peak_rss_mb"]
    rows = []
    for c in contenders:
        median = statistics.median(c.times)
        p95 = sorted(c.times)[int(0.95 * (len(c.times) - 1))]
        same_off, d_off = agree(c, official) if c is not official else ("-", 0.0)
        same_ref, d_ref = agree(c, reference) if reference and c is not official and c is not reference else ("-", None)
        rows.append([c.name, f"{median * 1e3:.1f}", f"{p95 * 1e3:.1f}", f"{statistics.median(c.cpu) * 1e3:.0f}",
                     f"{c.hello['load_s']:.2f}",
                     f"{first_load[c.entry]:.1f}" if c.entry in first_load else "-",
                     f"{ends[c.entry]['peak_rss_mb']:.0f}",
                     f"{base / median:.2f}x", f"{base_cpu / statistics.median(c.cpu):.2f}x",
                     f"{ends[c.entry]['peak_rss_mb'] / base_rss:.0%}",
                     same_off, "-" if c is official else f"{d_off:.1e}",
                     same_ref, "-" if d_ref is None else f"{d_ref:.1e}"])
    header = ["side", "median ms", "p95 ms", "CPU ms", "load s", "first load s", "peak RSS MiB",
              "speed-up", "CPU ratio", "RSS vs official", "top-1 = official", "max |Δp| official",
              "top-1 = shiwu fp32", "max |Δp| fp32"]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print("| " + " | ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths))) + " |")
    print("|" + "|".join(("-" * (w + 1) + ":") if i else "-" * (w + 2) for i, w in enumerate(widths)) + "|")
    for r in rows:
        print("| " + " | ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths))) + " |")
    print()
    for entry, why in refused.items():
        lines = why.strip().splitlines() or ["?"]
        reason = lines[-1] if not lines[0].startswith("worker exited") else f"{lines[0]} {lines[-1]}"
        timed = any(c.entry == entry for c in contenders)
        print(f"shiwu {entry}: refused by shiwu{' (timed anyway above)' if timed else ', not run'}: {reason}")

    print("\nspeed-up = official median wall time per photo / this one (same run, interleaved); CPU ratio = "
          "the same for CPU time of all threads;\nRSS = ru_maxrss of each side's own process; load s = "
          "imports + model (+ the official's text encoding) to ready, shiwu with its cache warm;\nfirst load s "
          "= shiwu's first start on an empty cache (text tower, export, int8 calibration and check).")
    if reference:
        print(f"top-1 = shiwu fp32 and max |Δp| fp32: against {reference.name}.")

    shiwu = contenders[1:]
    fp32 = [c for c in shiwu if c.entry.partition(":")[2] in ("", "fp32")]
    reduced = [c for c in shiwu if c not in fp32 and not c.refused]
    print()
    if fp32:
        best = max(fp32, key=lambda c: base / statistics.median(c.times))
        ratio = base / statistics.median(best.times)
        print(f"goal fp32 >= 2x the official per photo: {'met' if ratio >= 2 else 'NOT met'} "
              f"({best.name}, {ratio:.2f}x)")
    if reduced:
        best = max(reduced, key=lambda c: base / statistics.median(c.times))
        ratio = base / statistics.median(best.times)
        same, worst = agree(best, reference) if reference else ("?", float("nan"))
        print(f"goal best reduced precision >= 4x: {'met' if ratio >= 4 else 'NOT met'} "
              f"({best.name}, {ratio:.2f}x; top-1 = shiwu fp32 on {same} photos, max |Δp| {worst:.1e})")
    else:
        print("goal best reduced precision >= 4x: NOT measurable here: shiwu offers no reduced precision "
              "for this model on this CPU (see the refusals above)")
    for c in shiwu:
        if c.refused:
            same, worst = agree(c, reference) if reference else ("?", float("nan"))
            print(f"  not offered, for reference: {c.name}: {base / statistics.median(c.times):.2f}x, "
                  f"top-1 = shiwu fp32 on {same} photos, max |Δp| {worst:.1e}")
    if shiwu:
        rss = max(ends[c.entry]["peak_rss_mb"] for c in shiwu) / base_rss
        print(f"goal peak RSS <= 60% of the official: {'met' if rss <= 0.6 else 'NOT met'} "
              f"(largest shiwu side {rss:.0%})")


if __name__ == "__main__":
    sys.exit(record_run("vs_modelscope_clip", main))
