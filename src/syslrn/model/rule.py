"""The detection rule shared by offline detection and the online monitor.

A feature is outside its tolerance when ``|observed - expected| >
tolerance``, with ``expected = slope * requests + intercept``. A run (or a
window) is anomalous when at least one kept feature is outside.
"""

from __future__ import annotations

import numpy as np

#: Name of the rule, stored in model files.
RULE = "any-outside-tolerance"

RULE_DESCRIPTION = (
    "a run is anomalous when |observed - (slope * requests + intercept)| > "
    "tolerance for at least one kept feature"
)

# Slopes and intercepts are floats fitted to integer counts, so an observed
# count exactly at the tolerance may land a rounding error beyond it.
_ROUNDING = 1e-9


def expected_values(slope: np.ndarray, intercept: np.ndarray, requests) -> np.ndarray:
    """Return the expected feature values for one request count or an array of them.

    For an array of n request counts the result has shape (n, n_features).
    """
    requests = np.asarray(requests, dtype=np.float64)
    if requests.ndim == 0:
        return slope * requests + intercept
    return np.outer(requests, slope) + intercept


def outside_tolerance(
    observed: np.ndarray, expected: np.ndarray, tolerance: np.ndarray
) -> np.ndarray:
    """Return which features deviate from their expectation by more than
    their tolerance."""
    return np.abs(observed - expected) > tolerance * (1 + _ROUNDING) + _ROUNDING
