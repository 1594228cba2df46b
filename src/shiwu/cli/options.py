"""What several commands share: argument types, the model options, JSON output, exit codes."""

from __future__ import annotations

import argparse
import math
import json
import logging
from pathlib import Path

from ..backends import BACKENDS, PRECISIONS
from ..models.spec import DEFAULT_MODEL, INTERPOLATIONS, RESIZE_MODES, ModelRef

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
# an output that passed the check could not be written at the end (disk full), as batch's 3
EXIT_OUTPUT_FAILED = 3
# 128 + SIGPIPE: what the shell reports for a tool killed by a reader that stopped (`| head -1`)
EXIT_BROKEN_PIPE = 141


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def thread_count(text: str) -> int:
    """1 to cpu.max_threads()."""
    from ..cpu import max_threads

    value = positive_int(text)
    if value > max_threads():
        raise argparse.ArgumentTypeError(f"must be at most {max_threads()} here (4 per CPU), got {value}")
    return value


def count(text: str) -> int:
    """0 or more."""
    if text.strip() == "0":
        return 0
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}") from None


def input_size(text: str) -> int:
    value = positive_int(text)
    if not 32 <= value <= 1024:
        raise argparse.ArgumentTypeError(f"must be between 32 and 1024 pixels, got {value}")
    return value


def number(minimum: float, allow_equal: bool):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value):  # nan compares false with every bound; inf is no setting
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        if value < minimum or (value == minimum and not allow_equal):
            raise argparse.ArgumentTypeError(f"must be {'at least' if allow_equal else 'more than'} "
                                             f"{minimum:g}, got {text}")
        return value
    return parse


def fraction(text: str) -> float:
    value = number(0, True)(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def list_of(kind, choices=None):
    def parse(text: str) -> list:
        values = []
        for item in (t.strip() for t in text.split(",")):
            if not item:
                continue
            value = kind(item)
            if choices is not None and value not in choices:
                raise argparse.ArgumentTypeError(f"{item!r} is not one of {', '.join(choices)}")
            values.append(value)
        if not values:
            raise argparse.ArgumentTypeError("expected a comma-separated list")
        return values
    return parse


def rgb(text: str) -> tuple[float, float, float]:
    """``R,G,B`` on the 0-1 scale, as torchvision's Normalize takes them."""
    parts = [t.strip() for t in text.split(",")]
    try:
        values = tuple(float(t) for t in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three numbers R,G,B, got {text!r}") from None
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"expected three numbers R,G,B, got {len(values)}")
    return values


def add_model_choice(parser: argparse.ArgumentParser) -> None:
    """--model and what the user may say about their own model: labels, preprocessing, trust."""
    parser.add_argument("--model", "-m", default=DEFAULT_MODEL,
                        help=f"a model name (default {DEFAULT_MODEL}; see `shiwu models`), a "
                             "ModelScope id or folder, or your own model file: model.pth (whole "
                             "pickled module), TorchScript .pt, .onnx, OpenVINO .xml, or a folder "
                             "holding one with its labels")
    own = parser.add_argument_group("your own model (--model FILE or FOLDER)")
    own.add_argument("--labels", default=None, metavar="FILE",
                     help="class names: label_map.json ({\"0\": \"猫\", ...} or a list), .txt (one "
                          "per line), .tsv / meta_info.txt (index<TAB>label), .csv "
                          "(index,label[,english]); for Chinese-CLIP also 快递柜,电饭煲,...")
    own.add_argument("--resize", default=None, choices=RESIZE_MODES,
                     help="squash: the whole photo to size x size (the article's Resize((s, s))); "
                          "crop: short side to size/0.875, then the centre (default crop)")
    own.add_argument("--mean", type=rgb, default=None, metavar="R,G,B",
                     help="normalisation mean on the 0-1 scale (default ImageNet 0.485,0.456,0.406)")
    own.add_argument("--std", type=rgb, default=None, metavar="R,G,B",
                     help="normalisation std on the 0-1 scale (default ImageNet 0.229,0.224,0.225)")
    own.add_argument("--interpolation", default=None, choices=INTERPOLATIONS,
                     help="resize filter (default bilinear)")
    own.add_argument("--trust-model-code", action="store_true",
                     help="allow unpickling a whole model (model.pth saved with torch.save(model)): "
                          "unpickling runs code from the file, so only for files you trust")
    own.add_argument("--prompt", default=None,
                     help="Chinese-CLIP: the text each label is put in (default 一张{}的照片。; "
                          "\"{}\" uses the label as it is)")


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """The model and how to run it (predict, batch, serve, eval)."""
    add_model_choice(parser)
    # None = not given: `shiwu tune`'s settings for the model apply, else the defaults below
    parser.add_argument("--backend", "-b", default=None, choices=BACKENDS,
                        help="inference runtime (default: tuned, else auto)")
    parser.add_argument("--precision", "-p", default=None, choices=PRECISIONS,
                        help="numeric precision (default: tuned, else auto: the fastest that keeps "
                             "99%% of fp32's top-1 on this CPU)")
    parser.add_argument("--threads", "-t", type=thread_count, default=None,
                        help="intra-op threads (default: tuned, else physical cores)")
    parser.add_argument("--size", "-s", type=input_size, default=None,
                        help="input resolution, e.g. 224, 196, 168 (default: tuned, else the model's)")
    add_calibration(parser)
    parser.add_argument("--nice", action=NiceAction, help="be polite on a shared machine: lower CPU "
                        "and I/O priority, half the physical cores (unless --threads says otherwise)")


class NiceAction(argparse.Action):
    """Lowers the priorities as soon as the flag is parsed, so every command that has the model
    options gets --nice without code of its own; --threads, before or after it, still wins."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=False, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        from ..politeness import lower_priority, polite_threads

        setattr(namespace, self.dest, True)
        if getattr(namespace, "threads", None) is None:
            namespace.threads = polite_threads()
        for step in lower_priority():
            logging.getLogger("shiwu.politeness").info("--nice: %s", step)


def add_calibration(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--calibration", metavar="DIR", default=None,
                        help="photos to calibrate int8 on (default: shiwu's bundled photos)")


def add_gallery_options(parser: argparse.ArgumentParser, *, modes: bool = True) -> None:
    from ..gallery import DEFAULT_MIN_SIMILARITY, MODES

    group = parser.add_argument_group("classes taught by example photos")
    group.add_argument("--gallery", metavar="DIR", default=None,
                       help="a folder with one sub-folder per class (the folder name is the label) "
                            "holding a few example photos")
    if modes:
        group.add_argument("--gallery-mode", default="merge", choices=MODES,
                           help="merge (default): gallery classes close enough come before the "
                                "model's own labels; replace: the gallery alone")
        group.add_argument("--min-similarity", type=fraction, default=DEFAULT_MIN_SIMILARITY,
                           help=f"merge: the cosine similarity a gallery class's closest example needs "
                                f"(default {DEFAULT_MIN_SIMILARITY}, measured: docs/en/embeddings.md)")


def model_ref(args) -> ModelRef:
    """The --model value with everything said about it, as every library entry point takes it."""
    labels = getattr(args, "labels", None)
    return ModelRef(name=args.model, labels=labels, resize=getattr(args, "resize", None),
                    mean=getattr(args, "mean", None), std=getattr(args, "std", None),
                    interpolation=getattr(args, "interpolation", None),
                    trust_model_code=bool(getattr(args, "trust_model_code", False)),
                    prompt=getattr(args, "prompt", None))


class UsageError(Exception):
    """A command refuses what it was asked before doing any work: ``main`` prints the message as
    the one line ``shiwu: error: …`` and exits 2."""


class OutputFailed(Exception):
    """An output passed the check but its writing failed at the end (disk full): one line, exit 3."""


# What an index location needs beyond a plain install, checked before the work: a plain
# `pip install shiwu` gets one line naming the extra, not a traceback after every photo was
# embedded. A local index: the `index` extra; a Milvus store: the `milvus` extra.
INDEX_EXTRA = {"faiss": "faiss-cpu", "scipy": "scipy", "imagehash": "imagehash", "pydantic": "pydantic"}
MILVUS_EXTRA = {"pymilvus": "pymilvus", "pydantic": "pydantic"}


def require_extra(command: str, location: str | None = None) -> None:
    """Raise UsageError naming what `shiwu command` needs for the index at ``location`` (None: a
    local one) that is not installed, and the extra that brings it."""
    import importlib.util

    from ..index.milvus import is_milvus_location

    milvus = location is not None and is_milvus_location(location)
    extra, modules = ("milvus", dict(MILVUS_EXTRA)) if milvus else ("index", INDEX_EXTRA)
    if milvus and not str(location).startswith("milvus://"):
        modules["milvus_lite"] = "milvus-lite"  # a .db file is Milvus Lite, in this process
    missing = [dist for module, dist in modules.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise UsageError(f"`shiwu {command}` needs {', '.join(missing)}: pip install 'shiwu[{extra}]'")


def check_outputs(*paths: str | None, folder: bool = False, parents: bool = False) -> None:
    """Raise UsageError for the first of ``paths`` that cannot be written (None and "-", stdout,
    are skipped). Called before the slow work: a report or an index that cannot be written must
    not cost the run first. ``folder``/``parents`` as ``fsutil.cannot_write``."""
    from ..fsutil import cannot_write

    for path in paths:
        if path is None or path == "-":
            continue
        problem = cannot_write(path, folder=folder, parents=parents)
        if problem:
            raise UsageError(f"cannot write {path}: {problem}")


def write_json(target: str | None, data: dict) -> None:
    """``data`` to stdout ("-") or the file ``target``, which is replaced whole or not at all."""
    text = json.dumps(data, ensure_ascii=False, indent=2)
    if target == "-":
        print(text)
    elif target:
        write_output(target, text + "\n")


def write_output(target: str, text: str) -> None:
    """``text`` (UTF-8) to ``target``: atomically for a file, so a failed write leaves no half
    of one; as it is for what is not a file (/dev/stdout, a FIFO), which cannot be replaced."""
    from ..fsutil import atomic_write

    path = Path(target)
    try:
        if path.exists() and not path.is_file():
            path.write_text(text, encoding="utf-8")
        else:
            atomic_write(path, text)
    except BrokenPipeError:
        raise  # --json /dev/stdout into `| head`: the quiet exit of cli.main, not a failed file
    except OSError as exc:
        raise OutputFailed(f"cannot write {target}: {exc.strerror or exc}") from None
