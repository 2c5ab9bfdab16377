"""Fit a normal-behaviour model on embedded runs and package it as a Model."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from syslrn.embed.base import to_matrix, vocabulary
from syslrn.model.base import NormalModel
from syslrn.model.file import FeatureEntry, Model


def train_model(
    rows: Sequence[Mapping[str, float]],
    requests: Sequence[int],
    *,
    estimator: NormalModel,
    embedding: Mapping[str, Any],
    describe: Callable[[str], tuple[str | None, str | None]],
    training: Mapping[str, Any] | None = None,
) -> Model:
    """Fit ``estimator`` on feature rows and return the model file's content.

    Parameters
    ----------
    rows : sequence of mapping
        One feature dict per training run.
    requests : sequence of int
        The request count of each run.
    estimator : NormalModel
        An unfitted model; it is fitted in place.
    embedding : mapping
        ``{"name": ..., "params": {...}}`` of the features' embedding.
    describe : callable
        Maps a feature name to its ``(stat, node_type)``.
    training : mapping, optional
        More facts on the training runs to store (durations, classes...).
    """
    names = vocabulary(rows)
    X = to_matrix(rows, names)
    y = np.asarray(requests, dtype=np.float64)
    estimator.fit(X, y)

    features = []
    for j, name in enumerate(names):
        stat, node_type = describe(name)
        r2 = float(estimator.r2_[j])
        features.append(
            FeatureEntry(
                name=name,
                node_type=node_type,
                stat=stat,
                kept=bool(estimator.kept_[j]),
                r2=None if np.isnan(r2) else r2,
                slope=float(estimator.slope_[j]),
                intercept=float(estimator.intercept_[j]),
                tolerance=float(estimator.tolerance_[j]),
                reason=estimator.reason_[j],
            )
        )

    info: dict[str, Any] = {"runs": len(rows), "requests": [int(r) for r in requests]}
    info.update(training or {})
    # The training values of kept features, for reports.
    info["observations"] = {
        name: X[:, j].tolist() for j, name in enumerate(names) if estimator.kept_[j]
    }
    if estimator.degenerate_:
        info["fixed_requests"] = int(requests[0])
    return Model(
        embedding={
            "name": embedding["name"],
            "params": dict(embedding.get("params") or {}),
        },
        model={"name": estimator.name, "params": estimator.get_params()},
        features=features,
        degenerate=estimator.degenerate_,
        training=info,
    )
