"""``shiwu tune``: measure, then save the fastest setting that agrees with fp32."""

from __future__ import annotations

import sys

from .bench import add_grid, grid_options
from .options import (EXIT_INTERRUPTED, EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, fraction, model_ref,
                      write_json)


def add(commands) -> None:
    from ..tune import DEFAULT_MIN_AGREEMENT, TUNE_PRECISIONS, TUNE_SECONDS

    tune = commands.add_parser(
        "tune", help="measure, then save the fastest setting that agrees with fp32 (used by default)",
        description="A compact bench; the fastest setting whose top-1 agreement with fp32 is at "
                    "least --min-agreement is saved to the settings file, which predict, batch, "
                    "serve and eval then use unless an option overrides it.")
    add_grid(tune, precisions=",".join(TUNE_PRECISIONS), seconds=TUNE_SECONDS, batches="1,8",
             sizes_help="comma-separated input sizes (default: the model's, 7/8 and 3/4 of it)")
    tune.add_argument("--min-agreement", type=fraction, default=DEFAULT_MIN_AGREEMENT,
                      help=f"lowest acceptable top-1 agreement with fp32 (default {DEFAULT_MIN_AGREEMENT})")
    tune.add_argument("--dry-run", action="store_true", help="measure and choose, but save nothing")
    tune.set_defaults(run=run)


def run(args) -> int:
    from ..bench import BenchError
    from ..config import ConfigError
    from ..tune import format_result, tune

    try:
        result = tune(model_ref(args), min_agreement=args.min_agreement, save=not args.dry_run,
                      **grid_options(args))
    except (BenchError, ConfigError, FileNotFoundError) as exc:
        print(f"shiwu: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(format_result(result), file=sys.stderr if args.json == "-" else sys.stdout, flush=True)
    write_json(args.json, result.to_dict())
    if result.report.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK if result.chosen else EXIT_SOME_FAILED
