"""``shiwu tune``: measure, then save the fastest setting that agrees with fp32."""

from __future__ import annotations

import sys

from .bench import add_grid, grid_options
from .options import (EXIT_INTERRUPTED, EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, check_outputs, fraction,
                      model_ref, write_json)


def add(commands) -> None:
    from ..tune import DEFAULT_MAX_DROP, TUNE_PRECISIONS, TUNE_SECONDS

    tune = commands.add_parser(
        "tune", help="measure, then save the fastest setting that keeps fp32's accuracy (used by default)",
        description="A compact bench; the fastest setting whose top-1 accuracy is at least "
                    "(1 - --max-drop) of fp32's is saved to the settings file, which predict, batch, "
                    "serve and eval then use unless an option overrides it. Accuracy: --eval DIR "
                    "(your labelled photos), else the figures shipped for packaged models, "
                    "reproduced here, else a label-free estimate.")
    add_grid(tune, precisions=None, seconds=TUNE_SECONDS, batches="1,8",
             sizes_help="comma-separated input sizes (default: the model's, 7/8 and 3/4 of it)",
             precisions_help=f"comma-separated precisions (default: those of {','.join(TUNE_PRECISIONS)} this "
                             "CPU runs natively, as --precision auto: fp32, bf16 with AVX-512 BF16 or AMX, "
                             "int8 with VNNI or AMX)")
    tune.add_argument("--max-drop", type=fraction, default=DEFAULT_MAX_DROP,
                      help=f"largest relative top-1 loss against fp32 (default {DEFAULT_MAX_DROP}: keep 99%%)")
    tune.add_argument("--eval", metavar="DIR", default=None, dest="eval_dir",
                      help="judge accuracy on your labelled photos (one sub-folder per class, as shiwu eval)")
    tune.add_argument("--dry-run", action="store_true", help="measure and choose, but save nothing")
    tune.set_defaults(run=run)


def run(args) -> int:
    from ..bench import BenchError
    from ..config import ConfigError, config_path
    from ..evaluate import EvalError
    from ..tune import format_result, tune

    check_outputs(args.json)  # before minutes of measuring, not after
    settings = config_path()
    before = _stamp(settings)
    try:
        result = tune(model_ref(args), max_drop=args.max_drop, eval_dir=args.eval_dir,
                      save=not args.dry_run, **grid_options(args))
    except (BenchError, ConfigError, EvalError, FileNotFoundError) as exc:
        print(f"shiwu: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:  # judging or confirming, after the measurements
        return _interrupted(settings, before)
    print(format_result(result), file=sys.stderr if args.json == "-" else sys.stdout, flush=True)
    write_json(args.json, result.to_dict())
    if result.report.interrupted:
        return _interrupted(settings, before)
    return EXIT_OK if result.chosen else EXIT_SOME_FAILED


def _stamp(path) -> tuple | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size, stat.st_ino


def _interrupted(settings, before) -> int:
    """One line on stderr, whatever stdout is: interrupted, and what was saved (the settings
    file is written once, at the very end, atomically: nothing, unless the Ctrl-C came after)."""
    if _stamp(settings) == before:
        print("shiwu: interrupted: nothing was saved", file=sys.stderr, flush=True)
    else:
        print(f"shiwu: interrupted after the chosen setting was saved to {settings}", file=sys.stderr,
              flush=True)
    return EXIT_INTERRUPTED
