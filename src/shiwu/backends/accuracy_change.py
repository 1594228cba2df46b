"""How sure a measured top-1 drop is: the two settings compared photo by photo.

A drop measured on labelled photos is a sample: on 500 photos, a setting that changes the answer
on 16 of them (9 that fp32 got right now wrong, 7 the other way) measures a 0.46% drop, and
another 500 photos of the same kind could show a drop above 1% or a gain. Both settings answer
the same photos, so what decides is the photos on which they disagree: each photo is one of
four kinds (both right, only fp32 right = lost, only the setting right = gained, both wrong), and
the relative drop is (lost - gained) / (both right + lost).

The interval is drawn from the posterior of the four shares (Dirichlet with Jeffreys' prior,
i.e. the counts + 0.5: a Bayesian bootstrap that, unlike resampling the photos, does not claim
certainty when no photo changed). It says what a held-back set of photos like these may show;
the policy still decides on the measured drop (MLPerf's rule), this only says how close it was.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LEVEL = 0.90   # the interval's probability
DRAWS = 4000   # posterior draws: the interval's ends move by < 0.05 point between seeds at 500 photos


@dataclass(frozen=True)
class PairedChange:
    photos: int
    lost: int      # fp32 right, the setting wrong
    gained: int    # the setting right, fp32 wrong
    drop: float    # relative top-1 drop, as the policy measures it
    low: float     # LEVEL interval of the relative drop
    high: float

    def to_dict(self) -> dict:
        return {"photos": self.photos, "lost": self.lost, "gained": self.gained,
                "drop": round(self.drop, 5), "drop_interval": [round(self.low, 5), round(self.high, 5)]}

    def describe(self) -> str:
        return (f"{self.lost} lost, {self.gained} gained of {self.photos}; "
                f"{LEVEL:.0%} interval {self.low:+.2%} to {self.high:+.2%}")

    def undecided(self, max_drop: float) -> bool:
        """Whether photos like these could as well have given the other verdict."""
        return self.low <= max_drop < self.high


def paired_change(reference_correct, correct, *, seed: int = 0) -> PairedChange:
    """Compare two settings' top-1 outcomes on the same photos (booleans, one per photo, same order)."""
    reference_correct = np.asarray(reference_correct, dtype=bool)
    correct = np.asarray(correct, dtype=bool)
    if reference_correct.shape != correct.shape or reference_correct.ndim != 1:
        raise ValueError("paired_change needs one outcome per photo from each setting, in the same order")
    both = int(np.sum(reference_correct & correct))
    lost = int(np.sum(reference_correct & ~correct))
    gained = int(np.sum(~reference_correct & correct))
    neither = len(correct) - both - lost - gained
    right = both + lost
    drop = (lost - gained) / right if right else 0.0
    shares = np.random.default_rng(seed).dirichlet(np.array([both, lost, gained, neither]) + 0.5, DRAWS)
    drops = (shares[:, 1] - shares[:, 2]) / (shares[:, 0] + shares[:, 1])
    tail = (1 - LEVEL) / 2
    low, high = np.quantile(drops, [tail, 1 - tail])
    return PairedChange(len(correct), lost, gained, float(drop), float(low), float(high))
