"""Logits to top-k probabilities and labels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .labels import LabelSet


@dataclass(frozen=True)
class Prediction:
    label: str       # Chinese name
    label_en: str    # English name, "" when the model has none
    index: int       # class index in the model's output (in the gallery's classes for "gallery")
    score: float     # softmax probability, 0..1 (for "gallery": the class's share of the vote)
    source: str = "model"            # "gallery": a class taught by example photos
    similarity: float | None = None  # "gallery": cosine similarity of its closest example

    def to_dict(self) -> dict:
        out = {"label": self.label, "label_en": self.label_en, "index": self.index,
               "score": round(self.score, 6)}
        if self.source != "model":
            out.update(source=self.source, similarity=round(float(self.similarity), 6))
        return out


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of an (N, C) array, computed in float64 for stable small probabilities."""
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def top_k(logits: np.ndarray, labels: LabelSet, k: int) -> list[list[Prediction]]:
    """For each row of (N, C) logits, the ``k`` most probable classes, best first."""
    if logits.ndim != 2 or logits.shape[1] != len(labels):
        raise ValueError(f"logits of shape {logits.shape} do not match {len(labels)} labels")
    k = max(1, min(k, logits.shape[1]))
    probs = softmax(logits)
    # argpartition then sort only k entries: with 54,092 classes a full sort is the slow part.
    candidates = np.argpartition(-probs, k - 1, axis=1)[:, :k]
    results = []
    for row, cand in zip(probs, candidates):
        order = cand[np.argsort(-row[cand], kind="stable")]
        results.append([Prediction(labels.zh[i], labels.en[i], int(i), float(row[i])) for i in order])
    return results
