"""The one base class of the errors shiwu raises for what it was given: ``except shiwu.ShiwuError``
catches a bad image, model, runtime, gallery, index or settings file, and nothing else. Each
error keeps its built-in base too (ImageError is a ValueError, ModelNotFound a LookupError,
BackendUnavailable a RuntimeError), so code that caught those still does."""

from __future__ import annotations


class ShiwuError(Exception):
    """An input, model, runtime or file that shiwu refuses; the message says what and why."""
