"""``shiwu bench``: latency, throughput, memory, cold start and fp32 agreement of each setting.

Also holds the grid options that ``shiwu tune`` shares (backends x precisions x sizes x ...).
"""

from __future__ import annotations

import sys

from ..backends import BACKENDS, RUN_PRECISIONS
from .options import (EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, OutputFailed, add_model_choice, check_outputs,
                      input_size, list_of, model_ref, number, positive_int, write_json)


def add_grid(cmd, *, precisions: str | None, seconds: float, batches: str, sizes_help: str,
             precisions_help: str | None = None) -> None:
    """``precisions``: the default list (comma-separated), or None with ``precisions_help`` saying
    what the command then measures."""
    from ..bench import DEFAULT_AGREEMENT_IMAGES, DEFAULT_BACKENDS

    add_model_choice(cmd)
    cmd.add_argument("--backends", type=list_of(str, BACKENDS), default=list(DEFAULT_BACKENDS),
                     help=f"comma-separated (default {','.join(DEFAULT_BACKENDS)})")
    cmd.add_argument("--precision", type=list_of(str, RUN_PRECISIONS),
                     default=precisions.split(",") if precisions else None,
                     help=precisions_help or f"comma-separated precisions (default {precisions})")
    cmd.add_argument("--sizes", type=list_of(input_size), default=None, help=sizes_help)
    cmd.add_argument("--threads", type=list_of(positive_int), default=None,
                     help="comma-separated thread counts (default: physical cores)")
    cmd.add_argument("--batch", type=list_of(positive_int), default=[int(b) for b in batches.split(",")],
                     help=f"comma-separated batch sizes (default {batches})")
    cmd.add_argument("--images", metavar="DIR", default=None,
                     help="photos to measure agreement on (default: shiwu's bundled photos)")
    cmd.add_argument("--views", type=positive_int, default=DEFAULT_AGREEMENT_IMAGES,
                     help=f"photo views for top-1 agreement (default {DEFAULT_AGREEMENT_IMAGES})")
    cmd.add_argument("--seconds", type=number(0, False), default=seconds,
                     help=f"measuring time per configuration (default {seconds:g})")
    cmd.add_argument("--json", metavar="FILE", default=None, help="write the results as JSON (- for stdout)")
    cmd.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


def grid_options(args) -> dict:
    return dict(backends=args.backends, precisions=args.precision, sizes=args.sizes,
                threads=args.threads, batches=args.batch, images=args.images,
                agreement_images=args.views, seconds=args.seconds, progress=not args.quiet)


def add(commands) -> None:
    from ..bench import DEFAULT_SECONDS

    bench = commands.add_parser(
        "bench", help="latency, throughput, memory, cold start and fp32 agreement of each setting",
        description="Each combination runs in its own process (honest peak memory). Latency is "
                    "the model's, per image; cold start is process start to the first answer, with "
                    "the export cache and with an empty one; agreement is top-1 against torch fp32 "
                    "at the model's size. Ctrl-C prints what was measured so far.")
    add_grid(bench, precisions="fp32", seconds=DEFAULT_SECONDS, batches="1,8",
             sizes_help="comma-separated input sizes, e.g. 224,196,168 (default: the model's)")
    bench.add_argument("--plot", metavar="PNG", default=None,
                       help="draw latency against agreement (pip install 'shiwu[plot]')")
    bench.add_argument("--no-cold", action="store_true", help="skip the cold starts with an empty cache (a process per setting); the cold start "
                            "with the cache as it is comes free and stays")
    bench.set_defaults(run=run)


def run(args) -> int:
    from ..bench import BenchError, PlotUnavailable, check_plot_available, format_table, plot, run_bench

    check_outputs(args.json, args.plot)  # before minutes of measuring, not after
    try:
        if args.plot:
            check_plot_available()
        report = run_bench(model_ref(args), cold=not args.no_cold, **grid_options(args))
    except (PlotUnavailable, BenchError, FileNotFoundError) as exc:
        print(f"shiwu: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    table = format_table(report)
    print(table, file=sys.stderr if args.json == "-" else sys.stdout, flush=True)
    write_json(args.json, report.to_dict())
    if args.plot:
        try:
            written = plot(report, args.plot)
        except OSError as exc:
            raise OutputFailed(f"cannot write {args.plot}: {exc.strerror or exc}") from None
        print(f"shiwu: plot written to {written}", file=sys.stderr)
    return EXIT_INTERRUPTED if report.interrupted else EXIT_OK
