"""The CLI's log set-up lives in ``shiwu.logs`` (the server formats records the same way and
must not import the CLI); re-exported here for the CLI modules that import it from ``cli``."""

from ..logs import NORMAL, QUIET, VERBOSE, configure

__all__ = ["NORMAL", "QUIET", "VERBOSE", "configure"]
