"""How shiwu's log records look on a terminal; a primitive, as the CLI and the server both use it.

Library modules log through ``logging.getLogger(__name__)`` and never print; the command line (and ``shiwu serve``) decide
what reaches stderr and in what shape (``configure``): ``shiwu: message`` for progress and facts,
``shiwu: warning: message`` and ``shiwu: error: message`` for the rest, as shiwu always wrote."""

from __future__ import annotations

import logging
import sys

QUIET, NORMAL, VERBOSE = -1, 0, 1
_LEVELS = {QUIET: logging.WARNING, NORMAL: logging.INFO, VERBOSE: logging.DEBUG}


class _ShiwuFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.levelno >= logging.ERROR:
            message = f"error: {message}"
        elif record.levelno >= logging.WARNING:
            message = f"warning: {message}"
        if record.exc_info and record.levelno <= logging.DEBUG:
            message += "\n" + self.formatException(record.exc_info)
        return f"shiwu: {message}"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time of the record (tests and the CLI swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def configure(verbosity: int = NORMAL) -> None:
    """Route the ``shiwu`` loggers to stderr at the level ``verbosity`` asks for (idempotent)."""
    logger = logging.getLogger("shiwu")
    for handler in list(logger.handlers):
        if isinstance(handler, _StderrHandler):
            logger.removeHandler(handler)
    handler = _StderrHandler()
    handler.setFormatter(_ShiwuFormatter())
    logger.addHandler(handler)
    logger.setLevel(_LEVELS.get(verbosity, logging.INFO))
    logger.propagate = False
