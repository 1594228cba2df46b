"""``shiwu batch``: label whole folders into JSON Lines, CSV or Parquet, resumably.

::

    from shiwu.batch import run_batch
    summary = run_batch(["照片/"], "results.jsonl", recursive=True, resume=True)

The package has three parts: ``sources`` (INPUT arguments to image paths), ``output`` (result
files that survive kill -9 and resume) and the engines that turn paths into rows: ``local``
(decoder processes overlapped with batched inference on this machine) and ``ray_engine`` (the
same as a Ray Data pipeline, on one machine or a cluster). This module ties them together with
the progress bar, Ctrl-C handling and the summary.
"""

from __future__ import annotations

from .decoders import DecoderError
from .local import ModelOptions
from .output import OutputError, OutputWriteError
from .runner import ENGINES, run_batch
from .sources import InputError
from .summary import BatchSummary

__all__ = ["run_batch", "BatchSummary", "ModelOptions", "InputError", "OutputError",
           "OutputWriteError", "DecoderError", "ENGINES"]
