"""How much top-1 accuracy a setting loses against fp32, estimated without labels.

For models whose classes have no labelled photos here (ModelScope's ResNeSt, Chinese-CLIP, the
user's own), the accuracy change is estimated from fp32's and the setting's answers on the
same natural photos. The estimate takes fp32's own probabilities as the chance that each of
its answers is right (a calibrated model's meaning of softmax): fp32's expected accuracy is the
mean of its top probability, the setting's is the mean of the probability fp32 gave to the
setting's answer. A changed answer on a photo where fp32 was sure costs nearly a whole photo; a
changed answer between two classes fp32 found equally likely costs nothing — which plain
top-1 agreement, on augmented views where half the answers are guesses, cannot tell apart.

Chosen and validated on imagenet-dev by ``benchmarks/precision_accuracy.py`` (the other
measures below are recorded beside it; docs/en/precision.md has how well each predicted).
"""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def estimated_drop(reference_logits: np.ndarray, logits: np.ndarray) -> float:
    """The estimated relative top-1 drop (0.01 = the setting keeps 99% of fp32's accuracy)."""
    p = softmax(reference_logits)
    rows = np.arange(len(p))
    fp32_expected = p[rows, p.argmax(1)].mean()
    setting_expected = p[rows, np.asarray(logits).argmax(1)].mean()
    return float(max(0.0, 1.0 - setting_expected / fp32_expected))


def measures(reference_logits: np.ndarray, logits: np.ndarray, confident: float = 0.5) -> dict:
    """Every label-free measure of the change (the estimate and the ones it was chosen over)."""
    p, q = softmax(reference_logits), softmax(logits)
    ref_top1 = p.argmax(1)
    top1 = q.argmax(1)
    top5 = np.argsort(-q, axis=1)[:, :5]
    sure = p.max(1) >= confident
    kl = np.sum(p * (np.log(p + 1e-12) - np.log(q + 1e-12)), axis=1)
    return {
        "estimated_drop": estimated_drop(reference_logits, logits),
        "agreement": float(np.mean(top1 == ref_top1)),
        "confident_agreement": float(np.mean(top1[sure] == ref_top1[sure])) if sure.any() else None,
        "confident_photos": int(sure.sum()),
        "fp32_top1_in_top5": float(np.mean([r in t for r, t in zip(ref_top1, top5)])),
        "kl": float(kl.mean()),
        "photos": int(len(p)),
    }
