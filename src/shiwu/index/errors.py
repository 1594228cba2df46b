"""The errors an index raises: each names the index and says what to do."""

from __future__ import annotations

from ..errors import ShiwuError


class IndexFormatError(ShiwuError, ValueError):
    """The folder or collection is not a usable shiwu index: not one at all, made by another
    format version, or damaged. The message names it and says how to get a usable one."""


class IndexMismatchError(IndexFormatError):
    """The index was built with another model, weights or dimension than the vectors offered:
    scores between the two would mean nothing, so nothing is mixed."""


class IndexExistsError(IndexFormatError):
    """``create`` found an index already there (another process may just have made it)."""


class IndexUnreachable(IndexFormatError):
    """A Milvus store that cannot be reached (server down, wrong address or token): named with
    its address, never a traceback."""
