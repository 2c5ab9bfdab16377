"""Ordinary least squares per feature, with R^2 selection."""

from __future__ import annotations

import numpy as np

from syslrn.model.base import NormalModel


class LinearModel(NormalModel):
    """Fit each feature to the request count by ordinary least squares.

    The residual scale is the standard error of the regression,
    ``sqrt(SSR / (n - 2))``, so the tolerance ``max(k * scale, floor)``
    covers the spread that the training runs showed around the line. With a
    fixed workload the model expects each feature's mean, with the sample
    standard deviation as scale.

    Parameters and attributes are those of
    :class:`~syslrn.model.base.NormalModel`.

    Examples
    --------
    >>> import numpy as np
    >>> from syslrn.model import LinearModel
    >>> requests = np.array([10, 20, 30, 40])
    >>> X = np.column_stack([2 * requests + 1, [5, 3, 6, 4]])
    >>> LinearModel().fit(X, requests).kept_.tolist()
    [True, False]
    """

    name = "linear"

    def _fit_lines(self, x: np.ndarray, Y: np.ndarray):
        n = len(x)
        dx = x - x.mean()
        mean = Y.mean(axis=0)
        dY = Y - mean
        slope = dx @ dY / (dx @ dx)
        intercept = mean - slope * x.mean()
        residual = dY - np.outer(dx, slope)
        ssr = (residual**2).sum(axis=0)
        sst = (dY**2).sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            r2 = np.where(sst > 0, 1.0 - ssr / sst, np.nan)
        scale = np.sqrt(ssr / max(n - 2, 1))
        return slope, intercept, r2, scale

    def _location_scale(self, Y: np.ndarray):
        return Y.mean(axis=0), Y.std(axis=0, ddof=1)
