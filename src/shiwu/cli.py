"""Command line: parse, call the library, print. Exit codes: 0 ok, 1 some inputs failed, 2 usage."""

from __future__ import annotations

import argparse
import json
import signal
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
    # None = not given: `shiwu tune`'s settings for the model apply, else the defaults below
    parser.add_argument("--backend", "-b", default=None, choices=BACKENDS,
                        help="inference runtime (default: tuned, else auto)")
    parser.add_argument("--precision", "-p", default=None, choices=PRECISIONS,
                        help="numeric precision (default: tuned, else fp32)")
    parser.add_argument("--threads", "-t", type=positive_int, default=None,
                        help="intra-op threads (default: tuned, else physical cores)")
    parser.add_argument("--size", "-s", type=input_size, default=None,
                        help="input resolution, e.g. 224, 196, 168 (default: tuned, else the model's)")
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
    predict.add_argument("--batch-size", type=positive_int, default=None,
                         help="images per inference batch (default: tuned, else 8)")
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
    _add_measure_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    _utf8_stdio()
    _interruptible()
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ModelNotFound, BackendUnavailable) as exc:
        print(f"shiwu: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("shiwu: interrupted", file=sys.stderr)
        return 130


def _interruptible() -> None:
    # A shell that starts a command in the background makes it ignore SIGINT, and Python then
    # never raises KeyboardInterrupt: `shiwu batch` / `bench` / `tune` would run to the end on
    # Ctrl-C or `kill -INT` instead of stopping cleanly with what they have. Whoever sends
    # SIGINT explicitly means it.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


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
                       help="Ray cluster to join: auto (the one on this node) or HEAD:6379 "
                            "(default: start a local Ray)")
    batch.add_argument("--actors", type=positive_int, default=None,
                       help="Ray inference actors, one model each (default: CPUs / threads)")
    batch.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    batch.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    _add_model_options(batch)
    batch.set_defaults(run=cmd_batch)


def cmd_batch(args) -> int:
    from .batch import DecoderError, InputError, OutputError, run_batch
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
    except DecoderError as exc:  # rows written so far are kept: --resume continues
        print(f"shiwu: error: {exc}", file=sys.stderr)
        return EXIT_SOME_FAILED
    print(f"shiwu: {summary.format()}".replace("\n", "\nshiwu: "), file=sys.stderr)
    if args.json:
        print(json.dumps(summary.to_dict(), ensure_ascii=False))
    if summary.interrupted:
        return 130
    return EXIT_SOME_FAILED if summary.failed or summary.failed_before else EXIT_OK


# --- bench, eval, tune: measuring on this machine (shiwu.bench, shiwu.evaluate, shiwu.tune) ---

def _list_of(kind, choices=None):
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


def _fraction(text: str) -> float:
    value = _number(0, True)(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _add_measure_commands(commands) -> None:
    from .bench import DEFAULT_AGREEMENT_IMAGES, DEFAULT_BACKENDS, DEFAULT_SECONDS
    from .tune import DEFAULT_MIN_AGREEMENT, TUNE_PRECISIONS, TUNE_SECONDS

    def grid(cmd, *, precisions: str, seconds: float, batches: str, sizes_help: str) -> None:
        cmd.add_argument("--model", "-m", default=DEFAULT_MODEL, help="model name")
        cmd.add_argument("--backends", type=_list_of(str, BACKENDS), default=list(DEFAULT_BACKENDS),
                         help=f"comma-separated (default {','.join(DEFAULT_BACKENDS)})")
        cmd.add_argument("--precision", type=_list_of(str, PRECISIONS), default=precisions.split(","),
                         help=f"comma-separated precisions (default {precisions})")
        cmd.add_argument("--sizes", type=_list_of(input_size), default=None, help=sizes_help)
        cmd.add_argument("--threads", type=_list_of(positive_int), default=None,
                         help="comma-separated thread counts (default: physical cores)")
        cmd.add_argument("--batch", type=_list_of(positive_int), default=[int(b) for b in batches.split(",")],
                         help=f"comma-separated batch sizes (default {batches})")
        cmd.add_argument("--images", metavar="DIR", default=None,
                         help="photos to measure agreement on (default: shiwu's bundled photos)")
        cmd.add_argument("--views", type=positive_int, default=DEFAULT_AGREEMENT_IMAGES,
                         help=f"photo views for top-1 agreement (default {DEFAULT_AGREEMENT_IMAGES})")
        cmd.add_argument("--seconds", type=_number(0, False), default=seconds,
                         help=f"measuring time per configuration (default {seconds:g})")
        cmd.add_argument("--json", metavar="FILE", default=None, help="write the results as JSON (- for stdout)")
        cmd.add_argument("--quiet", "-q", action="store_true", help="no progress bar")

    bench = commands.add_parser(
        "bench", help="latency, throughput, memory, cold start and fp32 agreement of each setting",
        description="Each combination runs in its own process (honest peak memory). Latency is "
                    "the model's, per image; cold start is process start to the first answer, with "
                    "the export cache and with an empty one; agreement is top-1 against torch fp32 "
                    "at the model's size. Ctrl-C prints what was measured so far.")
    grid(bench, precisions="fp32", seconds=DEFAULT_SECONDS, batches="1,8",
         sizes_help="comma-separated input sizes, e.g. 224,196,168 (default: the model's)")
    bench.add_argument("--plot", metavar="PNG", default=None,
                       help="draw latency against agreement (pip install 'shiwu[plot]')")
    bench.add_argument("--no-cold", action="store_true", help="skip the cold-start measurements")
    bench.set_defaults(run=cmd_bench)

    tune = commands.add_parser(
        "tune", help="measure, then save the fastest setting that agrees with fp32 (used by default)",
        description="A compact bench; the fastest setting whose top-1 agreement with fp32 is at "
                    "least --min-agreement is saved to the settings file, which predict, batch, "
                    "serve and eval then use unless an option overrides it.")
    grid(tune, precisions=",".join(TUNE_PRECISIONS), seconds=TUNE_SECONDS, batches="1,8",
         sizes_help="comma-separated input sizes (default: the model's, 7/8 and 3/4 of it)")
    tune.add_argument("--min-agreement", type=_fraction, default=DEFAULT_MIN_AGREEMENT,
                      help=f"lowest acceptable top-1 agreement with fp32 (default {DEFAULT_MIN_AGREEMENT})")
    tune.add_argument("--dry-run", action="store_true", help="measure and choose, but save nothing")
    tune.set_defaults(run=cmd_tune)

    evaluate = commands.add_parser(
        "eval", help="top-1 / top-5 accuracy on a labelled folder (one sub-folder per class)",
        description="Class folders are named by index (967), English name (espresso) or Chinese "
                    "name (浓缩咖啡). Unreadable images are counted and listed (exit 1).")
    evaluate.add_argument("folder", metavar="DIR", help="folder with one sub-folder per class")
    evaluate.add_argument("--batch-size", type=positive_int, default=None,
                          help="images per inference batch (default: tuned, else 8)")
    evaluate.add_argument("--json", metavar="FILE", default=None, help="write the report as JSON (- for stdout)")
    evaluate.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    _add_model_options(evaluate)
    evaluate.set_defaults(run=cmd_eval)


def _write_json(target: str | None, data: dict) -> None:
    text = json.dumps(data, ensure_ascii=False, indent=2)
    if target == "-":
        print(text)
    elif target:
        from pathlib import Path
        Path(target).write_text(text + "\n", encoding="utf-8")


def _grid_options(args) -> dict:
    return dict(backends=args.backends, precisions=args.precision, sizes=args.sizes,
                threads=args.threads, batches=args.batch, images=args.images,
                agreement_images=args.views, seconds=args.seconds, progress=not args.quiet)


def cmd_bench(args) -> int:
    from .bench import BenchError, PlotUnavailable, check_plot_available, format_table, plot, run_bench

    try:
        if args.plot:
            check_plot_available()
        report = run_bench(args.model, cold=not args.no_cold, **_grid_options(args))
    except (PlotUnavailable, BenchError, FileNotFoundError) as exc:
        print(f"shiwu: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    table = format_table(report)
    print(table, file=sys.stderr if args.json == "-" else sys.stdout, flush=True)
    _write_json(args.json, report.to_dict())
    if args.plot:
        print(f"shiwu: plot written to {plot(report, args.plot)}", file=sys.stderr)
    return 130 if report.interrupted else EXIT_OK


def cmd_tune(args) -> int:
    from .bench import BenchError
    from .config import ConfigError
    from .tune import format_result, tune

    try:
        result = tune(args.model, min_agreement=args.min_agreement, save=not args.dry_run,
                      **_grid_options(args))
    except (BenchError, ConfigError, FileNotFoundError) as exc:
        print(f"shiwu: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(format_result(result), file=sys.stderr if args.json == "-" else sys.stdout, flush=True)
    _write_json(args.json, result.to_dict())
    if result.report.interrupted:
        return 130
    return EXIT_OK if result.chosen else EXIT_SOME_FAILED


def cmd_eval(args) -> int:
    from .evaluate import EvalError, evaluate, format_report

    try:
        report = evaluate(args.folder, model=args.model, backend=args.backend, precision=args.precision,
                          threads=args.threads, size=args.size, batch_size=args.batch_size,
                          calibration=args.calibration, progress=not args.quiet)
    except EvalError as exc:
        print(f"shiwu: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(format_report(report), file=sys.stderr if args.json == "-" else sys.stdout, flush=True)
    _write_json(args.json, report.to_dict())
    if report.interrupted:
        return 130
    return EXIT_SOME_FAILED if report.unreadable else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
