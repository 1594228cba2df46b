"""The command line behind ``shiwu.cli.main``: parse, call the library, print. One module per command; shared options in
``options``. Exit codes: 0 ok, 1 some inputs failed, 2 usage (bad option, unknown or unusable
model, missing runtime, an output that cannot be written), 3 an output failed at the end (disk
full), 130 interrupted, 141 the reader of stdout stopped early (a pipe into `head`)."""

from __future__ import annotations

import argparse
import os
import signal
import sys

from ..version import __version__
from ..backends import BackendUnavailable
from ..cache import CacheFull
from ..gallery import GalleryError
from ..models.spec import ModelNotFound
from . import logs
from . import batch, bench, dedupe, doctor, eval, export, index, models, predict, search, serve, tag, tune
from .options import (EXIT_BROKEN_PIPE, EXIT_INTERRUPTED, EXIT_OK, EXIT_OUTPUT_FAILED, EXIT_SOME_FAILED,
                      EXIT_USAGE, OutputFailed, UsageError)

__all__ = ["main", "build_parser", "parse_args", "EXIT_OK", "EXIT_SOME_FAILED", "EXIT_USAGE", "EXIT_INTERRUPTED"]

COMMANDS = (predict, batch, index, search, dedupe, tag, serve, bench, eval, tune, export, doctor, models)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shiwu", description="识物 — recognise what is in a photo and name it in Chinese, on a CPU.")
    parser.add_argument("--version", action="version", version=f"shiwu {__version__}")
    add_verbosity(parser)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.add(commands)
    for subparser in commands.choices.values():
        add_verbosity(subparser)
    return parser


def add_verbosity(parser: argparse.ArgumentParser) -> None:
    """``--quiet`` / ``--verbose``, before the command or after it. Their own dests: a command's
    defaults would otherwise overwrite what was given before the command's name."""
    for flags, dest, text in ((("--quiet", "-q"), "log_quiet", "only warnings and errors on stderr"),
                              (("--verbose", "-v"), "log_verbose", "also debugging detail on stderr")):
        try:
            parser.add_argument(*flags, dest=dest, action="store_true", default=argparse.SUPPRESS, help=text)
        except argparse.ArgumentError:
            # batch, index, dedupe, eval and bench have their own --quiet (no progress bar); it
            # quiets the log as well (verbosity() reads both)
            pass


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """``parser.parse_args``, with one --quiet wherever it was given. A command's own --quiet (no
    progress bar) defaults to False in the command's namespace, which argparse copies over what
    was parsed before the command's name: ``shiwu -q batch`` quieted the log but kept the bar."""
    args = parser.parse_args(argv)
    if getattr(args, "log_quiet", False) and hasattr(args, "quiet"):
        args.quiet = True
    return args


def verbosity(args: argparse.Namespace) -> int | None:
    """The log level the options ask for; None when they contradict each other."""
    quiet = getattr(args, "log_quiet", False) or getattr(args, "quiet", False) is True
    verbose = getattr(args, "log_verbose", False)
    if quiet and verbose:
        return None
    return logs.QUIET if quiet else logs.VERBOSE if verbose else logs.NORMAL


def main(argv: list[str] | None = None) -> int:
    try:
        code = _run(argv)
        # what is still buffered (doctor's one print) meets a reader that left here, not in the
        # interpreter's final flush, whose error could only be printed as "Exception ignored"
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # the reader of stdout stopped early (`shiwu predict --json *.jpg | head -1`): stop
        # quietly as Unix tools do, with the shell's code for a death by SIGPIPE. stdout goes to
        # /dev/null so the interpreter's own flush at exit finds no broken pipe (the pattern of
        # Python's signal docs; SIGPIPE's default action would also kill `serve` on a socket).
        _stdout_to_devnull()
        return EXIT_BROKEN_PIPE


def _stdout_to_devnull() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass  # stdout is no file (captured in a test, closed): nothing will be flushed to a pipe


def _run(argv: list[str] | None) -> int:
    _utf8_stdio()
    _interruptible()
    logs.configure()
    parser = build_parser()
    args = parse_args(parser, argv)
    level = verbosity(args)
    if level is None:
        parser.error("--quiet and --verbose contradict each other: give one")
    logs.configure(level)
    try:
        return args.run(args)
    except (ModelNotFound, BackendUnavailable, GalleryError, UsageError) as exc:
        print(f"shiwu: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (OutputFailed, CacheFull) as exc:  # a disk without room: exit 3
        print(f"shiwu: error: {exc}", file=sys.stderr)
        return EXIT_OUTPUT_FAILED
    except KeyboardInterrupt:
        print("shiwu: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


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


if __name__ == "__main__":
    sys.exit(main())
