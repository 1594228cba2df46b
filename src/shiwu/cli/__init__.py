"""Command line: parse, call the library, print. One module per command; shared options in
``options``; the parser and the exit codes in ``app``. Exit codes: 0 ok, 1 some inputs failed,
2 usage (bad option, unknown or unusable model, missing runtime, an output that cannot be
written), 3 an output failed at the end (disk full), 130 interrupted, 141 the reader of stdout
stopped early (a pipe into `head`).

This module imports nothing heavy: ``main`` is the console script's entry point, and a Ctrl-C
while numpy and the rest load (the first fraction of a second of any command) must end the
command quietly with 130, as a Unix tool, not with a traceback of an import."""

from __future__ import annotations

import sys

EXIT_INTERRUPTED = 130


def main(argv: list[str] | None = None) -> int:
    """Run the command in ``argv`` (default: the program's arguments); its exit code."""
    try:
        try:
            from .app import main as run
        except KeyboardInterrupt:
            return interrupted()
        try:
            return run(argv)
        except KeyboardInterrupt:  # outside a command's own handling (parsing, logging set-up)
            return interrupted()
    finally:
        if argv is None:
            _exiting()


def _exiting() -> None:
    # The command is done and the program is about to exit: a Ctrl-C now (a second one, say,
    # while `shiwu batch` prints its summary) would only cut the interpreter's own clean-up
    # (joining the decoder pool's threads, removing its semaphores) and end it by the signal.
    # Only as the program (argv from the command line), never when a caller runs main() in its
    # own process.
    import signal

    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread
        pass


def interrupted() -> int:
    try:
        print("shiwu: interrupted", file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass
    return EXIT_INTERRUPTED


def __getattr__(name: str):
    # shiwu.cli.build_parser, parse_args, verbosity, EXIT_*: what app defines
    if name.startswith("__"):
        raise AttributeError(name)
    from importlib import import_module

    return getattr(import_module(".app", __name__), name)
