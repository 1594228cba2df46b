"""Command line: parse, call the library, print. Exit codes: 0 ok, 1 some inputs failed, 2 usage."""

from __future__ import annotations

import argparse
import json
import sys
import unicodedata

from . import __version__
from .backends import BACKENDS, PRECISIONS, BackendUnavailable
from .models.registry import DEFAULT_MODEL, MODELS, ModelNotFound

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def input_size(text: str) -> int:
    value = positive_int(text)
    if not 32 <= value <= 1024:
        raise argparse.ArgumentTypeError(f"must be between 32 and 1024 pixels, got {value}")
    return value


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", "-m", default=DEFAULT_MODEL,
                        help=f"model name (default {DEFAULT_MODEL}; see `shiwu models`)")
    parser.add_argument("--backend", "-b", default="auto", choices=BACKENDS,
                        help="inference runtime (default auto)")
    parser.add_argument("--precision", "-p", default="fp32", choices=PRECISIONS,
                        help="numeric precision (default fp32)")
    parser.add_argument("--threads", "-t", type=positive_int, default=None,
                        help="intra-op threads (default: physical cores)")
    parser.add_argument("--size", "-s", type=input_size, default=None,
                        help="input resolution, e.g. 224, 196, 168 (default: the model's)")
    parser.add_argument("--calibration", metavar="DIR", default=None,
                        help="photos to calibrate int8 on (default: shiwu's bundled photos)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shiwu", description="识物 — recognise what is in a photo and name it in Chinese, on a CPU.")
    parser.add_argument("--version", action="version", version=f"shiwu {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    predict = commands.add_parser("predict", help="recognise images and print their top labels")
    predict.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    predict.add_argument("--topk", "-k", type=positive_int, default=5, help="labels per image (default 5)")
    predict.add_argument("--batch-size", type=positive_int, default=8, help="images per inference batch")
    predict.add_argument("--json", action="store_true", help="one JSON object per image (JSON Lines)")
    _add_model_options(predict)
    predict.set_defaults(run=cmd_predict)

    export = commands.add_parser("export", help="write the model as ONNX, TorchScript or OpenVINO IR")
    export.add_argument("--format", "-f", required=True, choices=("onnx", "torchscript", "openvino"))
    export.add_argument("--out", "-o", required=True, help="output file (.onnx, .pt or .xml)")
    export.add_argument("--model", "-m", default=DEFAULT_MODEL, help="model name")
    export.add_argument("--size", "-s", type=input_size, default=None, help="input resolution")
    export.add_argument("--precision", "-p", default="fp32", choices=("fp32", "int8"))
    export.add_argument("--calibration", metavar="DIR", default=None, help="photos to calibrate int8 on")
    export.set_defaults(run=cmd_export)

    doctor = commands.add_parser("doctor", help="show the CPU, threads, versions and available backends")
    doctor.add_argument("--json", action="store_true", help="print JSON")
    doctor.set_defaults(run=cmd_doctor)

    models = commands.add_parser("models", help="list models and whether their weights are installed")
    models.add_argument("--json", action="store_true", help="print JSON")
    models.set_defaults(run=cmd_models)

    _add_serve_command(commands)
    _add_batch_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    _utf8_stdio()
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ModelNotFound, BackendUnavailable) as exc:
        print(f"shiwu: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("shiwu: interrupted", file=sys.stderr)
        return 130


def _utf8_stdio() -> None:
    # Chinese labels must not crash on a terminal or pipe whose locale is ASCII.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure") and (stream.encoding or "").lower() not in ("utf-8", "utf8"):
            stream.reconfigure(encoding="utf-8")


def cmd_predict(args) -> int:
    from .recognizer import Recognizer

    recognizer = Recognizer(args.model, backend=args.backend, precision=args.precision,
                            threads=args.threads, size=args.size, batch_size=args.batch_size,
                            calibration=args.calibration)
    failed = 0
    for result in recognizer.iter_recognize(args.images, topk=args.topk):
        if result.error is not None:
            failed += 1
            print(f"shiwu: {result.error}", file=sys.stderr)
        if args.json:
            print(json.dumps(result.to_dict(), ensure_ascii=False), flush=True)
        elif result.ok:
            print(format_predictions(result), flush=True)
    if failed:
        print(f"shiwu: {failed} of {len(args.images)} images failed", file=sys.stderr)
    return EXIT_SOME_FAILED if failed else EXIT_OK


def display_width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def pad(text: str, width: int) -> str:
    return text + " " * max(0, width - display_width(text))


def format_predictions(result) -> str:
    width = max(display_width(p.label) for p in result.predictions)
    lines = [result.image]
    for rank, p in enumerate(result.predictions, 1):
        english = f"  {p.label_en}" if p.label_en else ""
        lines.append(f"  {rank}. {pad(p.label, width)}  {p.score * 100:5.1f}%{english}")
    return "\n".join(lines)


def cmd_export(args) -> int:
    from .backends.export import export_for_deployment
    from .models.registry import get_model

    spec = get_model(args.model)
    size = args.size or spec.preprocessing.size
    for path in export_for_deployment(spec, size=size, fmt=args.format, out=args.out,
                                      precision=args.precision, calibration=args.calibration):
        print(path)
    pre = spec.preprocessing.with_size(size)
    print(f"input: float32 NCHW (batch, 3, {size}, {size}), RGB; resize short side to {pre.resize_short}, "
          f"centre crop {size}, (pixel - {pre.mean}) / {pre.std} on the 0-255 scale; output: logits",
          file=sys.stderr)
    return EXIT_OK


def cmd_doctor(args) -> int:
    from .doctor import format_report, report

    info = report()
    print(json.dumps(info, ensure_ascii=False, indent=2) if args.json else format_report(info))
    return EXIT_OK


def cmd_models(args) -> int:
    rows = [{"name": spec.name, "classes": spec.num_classes, "input_size": spec.preprocessing.size,
             "weights_installed": spec.available, "description": spec.description,
             "install": None if spec.available else spec.install_hint}
            for spec in MODELS.values()]
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return EXIT_OK
    for row in rows:
        mark = "installed" if row["weights_installed"] else "not installed"
        default = " (default)" if row["name"] == DEFAULT_MODEL else ""
        print(f"{row['name']:<22} {row['classes']:>6} classes  {row['input_size']}px  {mark:<13} "
              f"{row['description']}{default}")
        if row["install"]:
            print(f"{'':<22} {row['install']}")
    return EXIT_OK



def _number(minimum: float, allow_equal: bool):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value < minimum or (value == minimum and not allow_equal):
            raise argparse.ArgumentTypeError(f"must be {'at least' if allow_equal else 'more than'} "
                                             f"{minimum:g}, got {text}")
        return value
    return parse


def _add_serve_command(commands) -> None:
    from .server.settings import ENV_API_KEY, MB, ServerSettings

    d = ServerSettings()
    serve = commands.add_parser(
        "serve", help="HTTP service with micro-batching and a web page (pip install \"shiwu[serve]\")",
        description="POST /v1/recognize, GET /v1/models /healthz /readyz /metrics /docs, web page at /.")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    serve.add_argument("--workers", type=positive_int, default=1,
                       help="processes, each with its own model and batcher (default 1)")
    serve.add_argument("--max-batch-size", type=lambda t: None if t == "auto" else positive_int(t),
                       default=None, metavar="N|auto",
                       help="most images in one inference batch (default auto: the size with the "
                            "lowest model time per image here, 1 unless batches are >=10%% cheaper)")
    serve.add_argument("--max-wait-ms", type=_number(0, True), default=d.max_wait_ms,
                       help=f"longest wait for a batch to fill, in ms (default {d.max_wait_ms:g})")
    serve.add_argument("--max-queue", type=positive_int, default=d.max_queue,
                       help=f"images in progress (decoding, queued, in a batch) before requests "
                            f"get 503 (default {d.max_queue})")
    serve.add_argument("--max-upload-mb", type=_number(0, False), default=d.max_upload_bytes / MB,
                       help=f"largest request body in MiB (default {d.max_upload_bytes / MB:g})")
    serve.add_argument("--max-images", type=positive_int, default=d.max_images,
                       help=f"most images in one request (default {d.max_images})")
    serve.add_argument("--max-pixels", type=positive_int, default=d.max_pixels,
                       help=f"most pixels in one image (default {d.max_pixels:,})")
    serve.add_argument("--timeout", type=_number(0, False), default=d.request_timeout,
                       help=f"request timeout in seconds (default {d.request_timeout:g})")
    serve.add_argument("--decode-threads", type=positive_int, default=d.decode_threads,
                       help=f"threads decoding and preprocessing uploads (default {d.decode_threads})")
    serve.add_argument("--warmup-seconds", type=_number(0, True), default=d.warmup_seconds,
                       help="time allowed for running every batch size once before /readyz says "
                            f"ready (default {d.warmup_seconds:g}; 0: no warm-up)")
    serve.add_argument("--api-key", default=None,
                       help=f"require this key on /v1/recognize (or set {ENV_API_KEY})")
    serve.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                       help="allow browser calls from this origin (repeatable; CORS is off by default)")
    serve.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    serve.add_argument("--no-access-log", action="store_true", help="do not log every request")
    _add_model_options(serve)
    serve.set_defaults(run=cmd_serve)


def cmd_serve(args) -> int:
    import os

    from .cpu import default_threads
    from .models.registry import get_model
    from .server import MissingExtra, ServerSettings, run
    from .server.settings import ENV_API_KEY, MB

    get_model(args.model).weights_path()  # unknown model or missing weights: say so now, exit 2
    threads = args.threads
    if threads is None and args.workers > 1:  # the workers share the cores
        threads = max(1, default_threads() // args.workers)
    settings = ServerSettings(
        model=args.model, backend=args.backend, precision=args.precision, threads=threads,
        size=args.size, max_batch_size=args.max_batch_size, max_wait_ms=args.max_wait_ms,
        max_queue=args.max_queue, max_upload_bytes=int(args.max_upload_mb * MB),
        max_images=args.max_images, max_pixels=args.max_pixels, request_timeout=args.timeout,
        calibration=args.calibration, warmup_seconds=args.warmup_seconds,
        decode_threads=args.decode_threads,
        api_key=args.api_key or os.environ.get(ENV_API_KEY) or None,
        cors_origins=tuple(args.cors_origin))
    try:
        run(settings, host=args.host, port=args.port, workers=args.workers,
            log_level=args.log_level, access_log=not args.no_access_log)
    except MissingExtra as exc:
        print(f"shiwu: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


def _count(text: str) -> int:
    if text.strip() == "0":
        return 0
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}") from None


def _add_batch_command(commands) -> None:
    batch = commands.add_parser(
        "batch", help="label folders or file lists into JSONL/CSV/Parquet, resumably",
        description="One row per image (the JSON of `predict --json`; flat columns in CSV/Parquet). "
                    "Rows are written per batch; --resume continues an interrupted run; Ctrl-C "
                    "stops after the current batch. Exit 0 ok, 1 some images failed, 2 usage, "
                    "130 interrupted.")
    batch.add_argument("inputs", nargs="+", metavar="INPUT",
                       help="folders, file lists (.txt/.lst: one path per line; - for stdin) or images")
    batch.add_argument("--out", "-o", required=True, metavar="FILE",
                       help="results file: .jsonl, .csv or .parquet")
    batch.add_argument("--recursive", "-r", action="store_true", help="look into sub-folders")
    again = batch.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="skip images already in the output and append the rest")
    again.add_argument("--overwrite", action="store_true", help="replace an existing output")
    batch.add_argument("--topk", "-k", type=positive_int, default=5, help="labels per image (default 5)")
    batch.add_argument("--batch-size", type=positive_int, default=32,
                       help="images per inference batch and per write (default 32)")
    batch.add_argument("--workers", "-w", type=_count, default=None,
                       help="decode processes (default: one per CPU; 0 decodes in the main "
                            "process); with --engine ray, decode tasks at once")
    batch.add_argument("--streams", type=positive_int, default=None,
                       help="models working side by side on different batches, sharing --threads "
                            "(default 2; 1 halves the memory)")
    batch.add_argument("--max-pixels", type=positive_int, default=None,
                       help="refuse images with more pixels (default 100,000,000)")
    batch.add_argument("--engine", choices=("local", "ray"), default="local",
                       help="local (default) or ray (pip install \"shiwu[ray]\")")
    batch.add_argument("--address", default=None,
                       help="Ray cluster to join, e.g. auto or ray://head:10001 (default: start a local Ray)")
    batch.add_argument("--actors", type=positive_int, default=None,
                       help="Ray inference actors, one model each (default: CPUs / threads)")
    batch.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    batch.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    _add_model_options(batch)
    batch.set_defaults(run=cmd_batch)


def cmd_batch(args) -> int:
    from .batch import InputError, OutputError, run_batch
    from .images import DEFAULT_MAX_PIXELS

    try:
        summary = run_batch(
            args.inputs, args.out, recursive=args.recursive, resume=args.resume,
            overwrite=args.overwrite, model=args.model, backend=args.backend,
            precision=args.precision, threads=args.threads, size=args.size,
            max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS, topk=args.topk,
            batch_size=args.batch_size, workers=args.workers, streams=args.streams,
            engine=args.engine,
            address=args.address, actors=args.actors,
            calibration=getattr(args, "calibration", None), progress=not args.quiet)
    except (InputError, OutputError) as exc:
        print(f"shiwu: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"shiwu: {summary.format()}".replace("\n", "\nshiwu: "), file=sys.stderr)
    if args.json:
        print(json.dumps(summary.to_dict(), ensure_ascii=False))
    if summary.interrupted:
        return 130
    return EXIT_SOME_FAILED if summary.failed or summary.failed_before else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
