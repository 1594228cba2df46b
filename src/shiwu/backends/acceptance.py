"""What an int8 model was measured to do, recorded beside it: how often its top-1 agrees with
fp32's on views of the bundled photos that calibration did not see.

``quantize`` builds an int8 model and records how it was made (``QuantizedModel``); this module
adds the agreement figure (shown by ``shiwu doctor`` and the benchmarks, and kept with the
model). Whether the model may be *used* is decided in one place only, the accuracy policy
(``backends.policy``: top-1 on labelled photos, shipped and reproduced here, or a label-free
estimate), which ``create_backend`` consults for every reduced precision.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from .. import cache, fsutil

log = logging.getLogger(__name__)

CHECK_VIEWS_PER_PHOTO = 12


def verdict_path(model_path: Path) -> Path:
    return model_path.with_suffix(".verdict.json")


def record_agreement(spec, size: int, model) -> dict:
    """The agreement record of ``model`` (a quantize.QuantizedModel) for ``spec`` at ``size``,
    measured once per model file and calibration set."""
    verdict = cache.read_json(verdict_path(model.path))
    if not verdict or verdict.get("calibration") != model.record.get("calibration", {}).get("set"):
        verdict = _measure(spec, size, model)
    return verdict


def _measure(spec, size: int, model) -> dict:
    from ..calibrate import bundled_photos, top1_agreement, view_batch

    # seed differs from calibration's, so these views are not the ones the quantizer saw
    check = view_batch(bundled_photos(), spec.preprocessing.with_size(size), CHECK_VIEWS_PER_PHOTO, seed=99)
    reference = model.logits_of("fp32", spec)(check)
    quantized = model.logits_of("int8", spec)(check)
    verdict = {"agreement": top1_agreement(reference, quantized), "views": int(len(check)),
               "calibration": model.record.get("calibration", {}).get("set")}
    try:
        fsutil.atomic_write(verdict_path(model.path), json.dumps(verdict, indent=2))
    except OSError as exc:  # a cache that cannot be written: the figure is still returned
        log.debug("agreement record not written: %s", exc)
    log.info("int8 top-1 agreement with fp32: %.1f%% on %d photo views", 100 * verdict["agreement"],
             verdict["views"])
    return verdict
