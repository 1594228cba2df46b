"""Command line: parse, call the library, print. One module per command; shared options in
``options``. Exit codes: 0 ok, 1 some inputs failed, 2 usage (bad option, unknown or unusable
model, missing runtime), 130 interrupted."""

from __future__ import annotations

import argparse
import signal
import sys

from .. import __version__
from ..backends import BackendUnavailable
from ..gallery import GalleryError
from ..models.spec import ModelNotFound
from . import logs
from . import batch, bench, dedupe, doctor, eval, export, index, models, predict, search, serve, tag, tune
from .options import EXIT_INTERRUPTED, EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE

__all__ = ["main", "build_parser", "EXIT_OK", "EXIT_SOME_FAILED", "EXIT_USAGE", "EXIT_INTERRUPTED"]

COMMANDS = (predict, batch, index, search, dedupe, tag, serve, bench, eval, tune, export, doctor, models)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shiwu", description="识物 — recognise what is in a photo and name it in Chinese, on a CPU.")
    parser.add_argument("--version", action="version", version=f"shiwu {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.add(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    _utf8_stdio()
    _interruptible()
    logs.configure()
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ModelNotFound, BackendUnavailable, GalleryError) as exc:
        print(f"shiwu: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
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
