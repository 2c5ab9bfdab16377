"""Huber regression per feature: a line that outlying training runs cannot drag."""

from __future__ import annotations

import numpy as np

from syslrn.model.base import NormalModel

# Consistency factor that makes the median absolute deviation estimate the
# standard deviation of normally distributed residuals.
_MAD_TO_SD = 1.4826


def _mad(values: np.ndarray) -> np.ndarray:
    """Return the normalised median absolute deviation from the median."""
    centre = np.median(values, axis=0)
    return _MAD_TO_SD * np.median(np.abs(values - centre), axis=0)


def _residual_scale(residual: np.ndarray) -> np.ndarray:
    """Return the normalised median absolute residual.

    Measured from zero rather than from the residuals' median: at a zero
    scale at least half the runs then lie on the line and keep their
    weight, so no column loses all its weights.
    """
    return _MAD_TO_SD * np.median(np.abs(residual), axis=0)


class HuberModel(NormalModel):
    """Fit each feature to the request count by Huber regression.

    Iteratively reweighted least squares, all features at once: a run whose
    residual exceeds ``epsilon`` times the residual scale (the normalised
    median absolute deviation) gets weight ``epsilon * scale / |residual|``.
    A few training runs that hide a failure, or that a background job
    disturbed, then barely move the line. R^2 is the weighted R^2 of the
    final fit and the tolerance uses the robust scale, so such runs neither
    hide a feature from selection nor widen its tolerance. With a fixed
    workload the model expects each feature's median.

    Parameters
    ----------
    epsilon : float, default=1.345
        Residuals beyond ``epsilon * scale`` are down-weighted; 1.345 gives
        95% efficiency on normally distributed residuals.
    max_iter : int, default=50
        Maximum number of reweighting rounds.

    Other parameters and the attributes are those of
    :class:`~syslrn.model.base.NormalModel`.
    """

    name = "huber"

    def __init__(
        self,
        r2_threshold: float = 0.9,
        tolerance_k: float = 4.0,
        tolerance_floor: float = 1.0,
        stable_cv: float = 0.1,
        epsilon: float = 1.345,
        max_iter: int = 50,
    ):
        super().__init__(
            r2_threshold=r2_threshold,
            tolerance_k=tolerance_k,
            tolerance_floor=tolerance_floor,
            stable_cv=stable_cv,
        )
        self.epsilon = epsilon
        self.max_iter = max_iter

    def _fit_lines(self, x: np.ndarray, Y: np.ndarray):
        weights = np.ones_like(Y)
        slope, intercept = self._weighted_line(x, Y, weights, None)
        for _ in range(int(self.max_iter)):
            residual = Y - (np.outer(x, slope) + intercept)
            weights = self._huber_weights(residual)
            new_slope, new_intercept = self._weighted_line(x, Y, weights, slope)
            converged = (
                np.abs(new_slope - slope) <= 1e-10 * (1 + np.abs(slope))
            ).all() and (
                np.abs(new_intercept - intercept) <= 1e-10 * (1 + np.abs(intercept))
            ).all()
            slope, intercept = new_slope, new_intercept
            if converged:
                break

        residual = Y - (np.outer(x, slope) + intercept)
        weights = self._huber_weights(residual)
        total = weights.sum(axis=0)
        centre = (weights * Y).sum(axis=0) / total
        ssr = (weights * residual**2).sum(axis=0)
        sst = (weights * (Y - centre) ** 2).sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            r2 = np.where(sst > 0, 1.0 - ssr / sst, np.nan)
        return slope, intercept, r2, _residual_scale(residual)

    def _location_scale(self, Y: np.ndarray):
        return np.median(Y, axis=0), _mad(Y)

    def _huber_weights(self, residual: np.ndarray) -> np.ndarray:
        limit = self.epsilon * _residual_scale(residual)
        size = np.abs(residual)
        # With a zero scale (most runs on the line) any run off the line gets
        # weight 0, while runs on the line keep weight 1.
        weights = np.ones_like(residual)
        np.divide(limit * np.ones_like(residual), size, out=weights, where=size > limit)
        return weights

    @staticmethod
    def _weighted_line(
        x: np.ndarray, Y: np.ndarray, weights: np.ndarray, fallback: np.ndarray | None
    ):
        total = weights.sum(axis=0)
        x_mean = (weights * x[:, None]).sum(axis=0) / total
        y_mean = (weights * Y).sum(axis=0) / total
        dx = x[:, None] - x_mean
        sxx = (weights * dx**2).sum(axis=0)
        sxy = (weights * dx * (Y - y_mean)).sum(axis=0)
        # Weights on one request count alone leave the slope undefined, so
        # such features keep their previous slope.
        previous = np.zeros_like(sxx) if fallback is None else fallback
        slope = np.divide(sxy, sxx, out=previous.copy(), where=sxx > 0)
        return slope, y_mean - slope * x_mean
