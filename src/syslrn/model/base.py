"""Normal-behaviour models: each feature against the run's request count.

A model fits one line per feature, ``value = slope * requests +
intercept``, keeps the features whose fit reaches the R^2 threshold, and
learns for each a tolerance from the training residuals. When every
training run has the same request count, no line can be fitted. The model
then expects each feature at its training location and keeps the features
that are stable across runs.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from syslrn.model.rule import expected_values, outside_tolerance
from syslrn.text import format_count

# Reasons stored per feature in ``reason_`` (None for kept features).
CONSTANT = "constant"
LOW_R2 = "r2-below-threshold"
UNSTABLE = "unstable"
ZERO = "always-zero"


class NormalModel(BaseEstimator):
    """Base of the models that regress features on requests.

    Subclasses implement :meth:`_fit_lines` (and, for the fixed-workload
    case, :meth:`_location_scale`). Selection, tolerance and prediction are
    shared, so every model is used through the same detection rule.

    Parameters
    ----------
    r2_threshold : float, default=0.9
        Minimum R^2 of a feature's fit for it to be kept.
    tolerance_k : float, default=4.0
        Tolerance in units of the residual scale.
    tolerance_floor : float, default=1.0
        Minimum tolerance, in feature units. A feature that the training
        runs fit exactly still tolerates a deviation of this size.
    stable_cv : float, default=0.1
        Fixed workload only: maximum coefficient of variation (scale /
        location) of a kept feature.

    Attributes
    ----------
    slope_, intercept_, r2_, scale_, tolerance_ : ndarray of shape (n_features,)
        The fitted line, its R^2 (NaN where undefined), the residual scale
        and the tolerance of each feature.
    kept_ : ndarray of bool, shape (n_features,)
    reason_ : list of (str or None)
        Why each rejected feature was rejected.
    degenerate_ : bool
        All training runs had one request count.
    n_features_in_ : int
    """

    #: Registry name, also stored in model files.
    name: ClassVar[str] = ""

    def __init__(
        self,
        r2_threshold: float = 0.9,
        tolerance_k: float = 4.0,
        tolerance_floor: float = 1.0,
        stable_cv: float = 0.1,
    ):
        self.r2_threshold = r2_threshold
        self.tolerance_k = tolerance_k
        self.tolerance_floor = tolerance_floor
        self.stable_cv = stable_cv

    def fit(self, X, y) -> NormalModel:
        """Fit each feature (a column of ``X``) against request counts ``y``."""
        X, y = self._validate(X, y)
        if not 0.0 <= self.r2_threshold <= 1.0:
            raise ValueError(f"r2_threshold={self.r2_threshold}: must be within [0, 1]")
        if self.tolerance_k < 0 or self.tolerance_floor < 0:
            raise ValueError(
                f"tolerance_k={self.tolerance_k}, tolerance_floor="
                f"{self.tolerance_floor}: both must be 0 or more"
            )
        if X.shape[0] < 2:
            raise ValueError(
                f"{format_count(X.shape[0], 'training run')}: at least 2 are needed"
            )
        self.n_features_in_ = X.shape[1]
        self.degenerate_ = bool(np.unique(y).size < 2)
        if self.degenerate_:
            self._fit_fixed_workload(X)
        else:
            self._fit_regression(X, y)
        self.tolerance_ = np.maximum(
            self.tolerance_k * self.scale_, self.tolerance_floor
        )
        return self

    def expected(self, requests) -> np.ndarray:
        """Return the expected features for request counts, shape (n, n_features)."""
        check_is_fitted(self, "slope_")
        return expected_values(
            self.slope_,
            self.intercept_,
            np.atleast_1d(np.asarray(requests, dtype=np.float64)),
        )

    def deviation(self, X, y) -> np.ndarray:
        """Return observed minus expected values, shape (n_runs, n_features)."""
        X, y = self._validate(X, y)
        return X - self.expected(y)

    def predict(self, X, y) -> np.ndarray:
        """Return, per run, whether a kept feature is outside its tolerance."""
        X, y = self._validate(X, y)
        outside = outside_tolerance(X, self.expected(y), self.tolerance_)
        return (outside & self.kept_).any(axis=1)

    def _validate(self, X, y) -> tuple[np.ndarray, np.ndarray]:
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        if X.ndim != 2:
            raise ValueError(f"X has shape {X.shape}: expected (n_runs, n_features)")
        if y.shape != (X.shape[0],):
            raise ValueError(
                f"y has shape {y.shape}: expected ({X.shape[0]},), "
                "one request count per run"
            )
        if hasattr(self, "n_features_in_") and X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {format_count(X.shape[1], 'feature')}: the model was fitted "
                f"on {self.n_features_in_}"
            )
        return X, y

    def _fit_regression(self, X: np.ndarray, y: np.ndarray) -> None:
        slope, intercept, r2, scale = self._fit_lines(y, X)
        constant = np.ptp(X, axis=0) == 0
        r2 = np.where(constant, np.nan, r2)
        with np.errstate(invalid="ignore"):
            kept = ~constant & (r2 >= self.r2_threshold)
        self.slope_, self.intercept_, self.r2_, self.scale_ = (
            slope,
            intercept,
            r2,
            scale,
        )
        self.kept_ = kept
        self.reason_ = _reasons(kept, np.where(constant, CONSTANT, LOW_R2))

    def _fit_fixed_workload(self, X: np.ndarray) -> None:
        location, scale = self._location_scale(X)
        zero = (location == 0) & (scale == 0)
        kept = ~zero & (scale <= self.stable_cv * np.abs(location))
        self.slope_ = np.zeros(X.shape[1])
        self.intercept_, self.scale_ = location, scale
        self.r2_ = np.full(X.shape[1], np.nan)
        self.kept_ = kept
        self.reason_ = _reasons(kept, np.where(zero, ZERO, UNSTABLE))

    def _fit_lines(self, x: np.ndarray, Y: np.ndarray):
        """Fit every column of ``Y`` against ``x``.

        Returns slope, intercept, R^2 and residual scale, each of shape
        (n_features,).
        """
        raise NotImplementedError

    def _location_scale(self, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return each column's location and scale, for a fixed workload."""
        raise NotImplementedError


def _reasons(kept: np.ndarray, rejection: np.ndarray) -> list[str | None]:
    """Return None for each kept feature and its rejection reason otherwise."""
    return [
        None if k else str(r)
        for k, r in zip(kept.tolist(), rejection.tolist(), strict=True)
    ]
