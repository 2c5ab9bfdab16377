"""Detection metrics: recall and selectivity first, precision and F1 beside them.

- recall: the share of failure runs that the detector flags;
- selectivity: the share of failure-free runs that it passes (the true
  negative rate);
- precision: the share of flagged runs that are failure runs;
- F1: the harmonic mean of precision and recall.

A ratio with an empty denominator is NaN (stored as null in JSON), e.g.
recall on a fold without failure runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else float("nan")


@dataclass(frozen=True)
class Confusion:
    """Counts of flagged and passed runs, by ground truth."""

    tp: int
    fp: int
    tn: int
    fn: int

    @classmethod
    def of(cls, is_failure: Sequence[bool], flagged: Sequence[bool]) -> Confusion:
        truth = np.asarray(is_failure, dtype=bool)
        guess = np.asarray(flagged, dtype=bool)
        return cls(
            tp=int((truth & guess).sum()),
            fp=int((~truth & guess).sum()),
            tn=int((~truth & ~guess).sum()),
            fn=int((truth & ~guess).sum()),
        )

    def __add__(self, other: Confusion) -> Confusion:
        return Confusion(
            self.tp + other.tp,
            self.fp + other.fp,
            self.tn + other.tn,
            self.fn + other.fn,
        )

    @property
    def recall(self) -> float:
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def selectivity(self) -> float:
        return _ratio(self.tn, self.tn + self.fp)

    @property
    def precision(self) -> float:
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        if np.isnan(p) or np.isnan(r):
            return float("nan")
        return 0.0 if p + r == 0 else 2 * p * r / (p + r)

    def metrics(self) -> dict[str, float]:
        return {
            "recall": self.recall,
            "selectivity": self.selectivity,
            "precision": self.precision,
            "f1": self.f1,
        }

    def to_dict(self) -> dict[str, int]:
        return {"tp": self.tp, "fp": self.fp, "tn": self.tn, "fn": self.fn}
