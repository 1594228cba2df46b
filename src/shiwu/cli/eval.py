"""``shiwu eval DIR``: top-1 / top-5 accuracy on a labelled folder (one sub-folder per class)."""

from __future__ import annotations

import sys

from .options import (EXIT_INTERRUPTED, EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, add_gallery_options,
                      add_model_options, check_outputs, model_ref, positive_int, write_json)


def add(commands) -> None:
    evaluate = commands.add_parser(
        "eval", help="top-1 / top-5 accuracy on a labelled folder (one sub-folder per class)",
        description="Class folders are named by index (967), English name (espresso) or Chinese "
                    "name (浓缩咖啡); with --gallery G, as G's classes (few-shot accuracy). "
                    "Unreadable images are counted and listed (exit 1).")
    evaluate.add_argument("folder", metavar="DIR", help="folder with one sub-folder per class")
    evaluate.add_argument("--batch-size", type=positive_int, default=None,
                          help="images per inference batch (default: tuned, else 8)")
    evaluate.add_argument("--json", metavar="FILE", default=None, help="write the report as JSON (- for stdout)")
    evaluate.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    add_model_options(evaluate)
    add_gallery_options(evaluate, modes=False)
    evaluate.set_defaults(run=run)


def run(args) -> int:
    from ..evaluate import EvalError, evaluate, format_report

    check_outputs(args.json)  # the report must not be lost after the whole evaluation
    try:
        report = evaluate(args.folder, model=model_ref(args), backend=args.backend,
                          precision=args.precision, threads=args.threads, size=args.size,
                          batch_size=args.batch_size, calibration=args.calibration,
                          gallery=args.gallery, progress=not args.quiet)
    except EvalError as exc:
        print(f"shiwu: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(format_report(report), file=sys.stderr if args.json == "-" else sys.stdout, flush=True)
    write_json(args.json, report.to_dict())
    if report.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_SOME_FAILED if report.unreadable else EXIT_OK
