"""The verdict on one run: each kept feature against its expectation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from syslrn.model.rule import outside_tolerance


@dataclass(frozen=True)
class FeatureCheck:
    """One kept feature of one run, compared with the model."""

    feature: str
    observed: float
    expected: float
    tolerance: float

    @property
    def deviation(self) -> float:
        """Observed minus expected value."""
        return self.observed - self.expected

    @property
    def outside(self) -> bool:
        return bool(
            outside_tolerance(
                np.float64(self.observed),
                np.float64(self.expected),
                np.float64(self.tolerance),
            )
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "observed": self.observed,
            "expected": self.expected,
            "tolerance": self.tolerance,
            "deviation": self.deviation,
            "outside": self.outside,
        }


@dataclass
class Detection:
    """The checks of every kept feature of one run, held as arrays.

    Attributes
    ----------
    requests : int
    features : list of str
    observed, expected, tolerance : ndarray of shape (n_kept,)
    notes : list of str
        Caveats on the verdict, e.g. a request count the model never saw
        with a fixed-workload model.
    """

    requests: int
    features: list[str]
    observed: np.ndarray
    expected: np.ndarray
    tolerance: np.ndarray
    notes: list[str] = field(default_factory=list)

    @property
    def deviation(self) -> np.ndarray:
        return self.observed - self.expected

    @property
    def outside(self) -> np.ndarray:
        """Which kept features are outside their tolerance."""
        return outside_tolerance(self.observed, self.expected, self.tolerance)

    @property
    def anomalous(self) -> bool:
        return bool(self.outside.any())

    def checks(self) -> list[FeatureCheck]:
        """Return the check of every kept feature."""
        return [self._check(i) for i in range(len(self.features))]

    def deviating(self) -> list[FeatureCheck]:
        """Return the checks of the features outside their tolerance."""
        return [self._check(i) for i in np.flatnonzero(self.outside)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "anomalous": self.anomalous,
            "deviating": [c.to_dict() for c in self.deviating()],
            "checks": [c.to_dict() for c in self.checks()],
            "notes": list(self.notes),
        }

    def _check(self, i: int) -> FeatureCheck:
        return FeatureCheck(
            feature=self.features[i],
            observed=float(self.observed[i]),
            expected=float(self.expected[i]),
            tolerance=float(self.tolerance[i]),
        )
