"""Whether a reduced-precision model may be used: the one decision, apart from how it is made.

``quantize`` builds an int8 model and records how (``QuantizedModel``); the backends then ask
``accept_int8`` before they load it. This module holds the rule and nothing else, so the rule can
change (accuracy measured on labelled photos, a label-free estimate, the user's ``--eval``
folder) without touching how models are quantized.

The rule here: the int8 model's top-1 agrees with fp32's on at least ``AGREEMENT_FLOOR`` of
views of the bundled photos that calibration did not see. The verdict is cached beside the
model, so it is measured once per model file.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from .. import fsutil
from . import BackendUnavailable, cache

log = logging.getLogger(__name__)

AGREEMENT_FLOOR = 0.99
CHECK_VIEWS_PER_PHOTO = 12
RUNTIME_NAMES = {"onnxruntime": "ONNX Runtime", "openvino": "OpenVINO"}


def verdict_path(model_path: Path) -> Path:
    return model_path.with_suffix(".verdict.json")


def accept_int8(spec, size: int, model) -> dict:
    """The verdict on ``model`` (a quantize.QuantizedModel) for ``spec`` at ``size``: returns it
    when int8 may be used, raises BackendUnavailable saying what was measured when not."""
    verdict = cache.read_json(verdict_path(model.path))
    if not verdict or verdict.get("calibration") != model.record.get("calibration", {}).get("set"):
        verdict = _measure(spec, size, model)
    if verdict.get("agreement", 0.0) < AGREEMENT_FLOOR:
        raise BackendUnavailable(
            f"{RUNTIME_NAMES.get(model.runtime, model.runtime)} int8 is not offered for {spec.name}: its "
            f"top-1 agreed with fp32 on {verdict.get('agreement', 0.0):.1%} of {verdict.get('views', 0)} "
            f"photo views, below the {AGREEMENT_FLOOR:.0%} floor. Use --precision bf16 (or fp32).")
    return verdict


def _measure(spec, size: int, model) -> dict:
    from ..calibrate import bundled_photos, top1_agreement, view_batch

    # seed differs from calibration's, so these views are not the ones the quantizer saw
    check = view_batch(bundled_photos(), spec.preprocessing.with_size(size), CHECK_VIEWS_PER_PHOTO, seed=99)
    reference = model.logits_of("fp32", spec)(check)
    quantized = model.logits_of("int8", spec)(check)
    verdict = {"agreement": top1_agreement(reference, quantized), "views": int(len(check)),
               "calibration": model.record.get("calibration", {}).get("set"), "floor": AGREEMENT_FLOOR}
    fsutil.atomic_write(verdict_path(model.path), json.dumps(verdict, indent=2))
    log.info("int8 top-1 agreement with fp32: %.1f%% on %d photo views", 100 * verdict["agreement"],
             verdict["views"])
    return verdict
