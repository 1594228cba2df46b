"""``shiwu batch``: label folders or file lists into JSONL / CSV / Parquet, resumably."""

from __future__ import annotations

import json
import sys

from .options import (EXIT_INTERRUPTED, EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, add_model_options,
                      count, model_ref, positive_int)

# The results file could not be written in the middle of a run (disk full, file too large, I/O
# error). Rows written before are intact; --resume continues once there is room.
EXIT_OUTPUT_FAILED = 3


def add(commands) -> None:
    batch = commands.add_parser(
        "batch", help="label folders or file lists into JSONL/CSV/Parquet, resumably",
        description="One row per image (the JSON of `predict --json`; flat columns in CSV/Parquet). "
                    "Rows are written per batch; --resume continues an interrupted run; Ctrl-C "
                    "stops after the current batch. An image is identified by the file its path "
                    "resolves to (symbolic links, ./ and absolute spellings are one image). "
                    "Exit 0 ok, 1 some images failed, 2 usage (before anything is written), "
                    "3 the results file could not be written (disk full: --resume after making "
                    "room), 130 interrupted.")
    batch.add_argument("inputs", nargs="+", metavar="INPUT",
                       help="folders, file lists (.txt/.lst: one path per line, taken verbatim; "
                            "a line starting with # is a comment; - for stdin) or images")
    batch.add_argument("--null", "-0", action="store_true",
                       help="the paths on stdin (-) are separated by NUL bytes (find -print0)")
    batch.add_argument("--out", "-o", required=True, metavar="FILE",
                       help="results file: .jsonl, .csv or .parquet")
    batch.add_argument("--recursive", "-r", action="store_true", help="look into sub-folders")
    again = batch.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="skip images already in the output and append the rest")
    again.add_argument("--overwrite", action="store_true", help="replace an existing output")
    batch.add_argument("--retry-failed", action="store_true",
                       help="with the output of an earlier run: recognise the images whose rows "
                            "have an error again and replace those rows (implies --resume)")
    batch.add_argument("--topk", "-k", type=positive_int, default=5,
                       help="labels per image (default 5; more than the model's classes is "
                            "lowered to their number, with a warning)")
    batch.add_argument("--batch-size", type=positive_int, default=32,
                       help="images per inference batch and per write (default 32)")
    batch.add_argument("--workers", "-w", type=count, default=None,
                       help="decode processes (default: one per CPU; 0 decodes in the main "
                            "process); with --engine ray, decode tasks at once")
    batch.add_argument("--streams", type=positive_int, default=None,
                       help="models working side by side on different batches, sharing --threads "
                            "(default 2; 1 halves the memory)")
    batch.add_argument("--max-pixels", type=positive_int, default=None,
                       help="refuse images with more pixels (default 100,000,000)")
    batch.add_argument("--engine", choices=("local", "ray"), default=None,
                       help="local (default) or ray (pip install \"shiwu[ray]\")")
    batch.add_argument("--address", default=None,
                       help="Ray cluster to join: auto (the one on this node) or HEAD:6379; "
                            "implies --engine ray (default: start a local Ray)")
    batch.add_argument("--actors", type=positive_int, default=None,
                       help="Ray inference actors, one model each (default: CPUs / threads)")
    batch.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    batch.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    add_model_options(batch)
    batch.set_defaults(run=run)


def run(args) -> int:
    from ..batch import DecoderError, InputError, OutputError, OutputWriteError, run_batch
    from ..images import DEFAULT_MAX_PIXELS

    if args.address and args.engine == "local":
        print("shiwu: error: --address is for --engine ray (the local engine joins no cluster)",
              file=sys.stderr)
        return EXIT_USAGE
    if args.retry_failed and args.overwrite:
        print("shiwu: error: --retry-failed and --overwrite contradict each other; choose one",
              file=sys.stderr)
        return EXIT_USAGE
    engine = args.engine or ("ray" if args.address else "local")
    try:
        summary = run_batch(
            args.inputs, args.out, recursive=args.recursive, resume=args.resume,
            overwrite=args.overwrite, model=model_ref(args), backend=args.backend,
            precision=args.precision, threads=args.threads, size=args.size,
            max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS, topk=args.topk,
            batch_size=args.batch_size, workers=args.workers, streams=args.streams,
            engine=engine, address=args.address, actors=args.actors,
            calibration=args.calibration, progress=not args.quiet, null=args.null,
            retry_failed=args.retry_failed)
    except OutputWriteError as exc:
        print(f"shiwu: error: {exc}", file=sys.stderr)
        return EXIT_OUTPUT_FAILED
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
        return EXIT_INTERRUPTED
    return EXIT_SOME_FAILED if summary.failed or summary.failed_before else EXIT_OK
