"""Detection scores: recall, selectivity, precision and F1 from verdict counts.

Recall is the share of failure runs that a detector flags. Selectivity is the
share of failure-free runs that it passes (the true negative rate).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DetectionScores:
    """Counts of verdicts on failure runs and on failure-free runs."""

    true_positives: int = 0
    false_negatives: int = 0
    true_negatives: int = 0
    false_positives: int = 0

    def add(self, failure: bool, flagged: bool) -> None:
        """Count one verdict on one run."""
        if failure and flagged:
            self.true_positives += 1
        elif failure:
            self.false_negatives += 1
        elif flagged:
            self.false_positives += 1
        else:
            self.true_negatives += 1

    @property
    def failures(self) -> int:
        return self.true_positives + self.false_negatives

    @property
    def normals(self) -> int:
        return self.true_negatives + self.false_positives

    @property
    def recall(self) -> float | None:
        """Flagged failure runs over failure runs; None without failure runs."""
        return _ratio(self.true_positives, self.failures)

    @property
    def selectivity(self) -> float | None:
        """Passed failure-free runs over failure-free runs; None without any."""
        return _ratio(self.true_negatives, self.normals)

    @property
    def precision(self) -> float | None:
        """Failure runs among flagged runs; None when nothing was flagged."""
        return _ratio(self.true_positives, self.true_positives + self.false_positives)

    @property
    def f1(self) -> float | None:
        """Harmonic mean of precision and recall; None when either is."""
        precision, recall = self.precision, self.recall
        if precision is None or recall is None:
            return None
        if precision + recall == 0:
            return 0.0
        return 2 * precision * recall / (precision + recall)

    def to_dict(self) -> dict:
        """Return the counts and the scores, for JSON output."""
        return {
            "true_positives": self.true_positives,
            "false_negatives": self.false_negatives,
            "true_negatives": self.true_negatives,
            "false_positives": self.false_positives,
            "recall": self.recall,
            "selectivity": self.selectivity,
            "precision": self.precision,
            "f1": self.f1,
        }


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None
