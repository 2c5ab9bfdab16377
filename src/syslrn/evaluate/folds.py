"""Cross-validation folds for detectors trained on failure-free runs only.

The failure-free runs are split into k folds. Fold i trains on the other
k - 1 folds of failure-free runs and tests on its own failure-free runs plus
every failure run: failure runs are never trained on. Every detector that
syslrn compares (its own models and the log-based baselines) takes its folds
from :func:`make_folds`, so that they are judged on the same experiments.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import KFold

from syslrn.text import format_count

DEFAULT_FOLDS = 10
DEFAULT_SEED = 0


@dataclass(frozen=True)
class Fold:
    """One fold: indices into the experiment list given to :func:`make_folds`."""

    index: int
    train: tuple[int, ...]
    test: tuple[int, ...]


def make_folds(
    is_failure: Sequence[bool],
    n_folds: int = DEFAULT_FOLDS,
    seed: int = DEFAULT_SEED,
) -> list[Fold]:
    """Split experiments into folds for training on failure-free runs only.

    Parameters
    ----------
    is_failure : sequence of bool
        One entry per experiment, in a stable order (for example sorted by
        experiment id): True for a failure run.
    n_folds : int
        Number of folds k. Must be at least 2 and at most the number of
        failure-free experiments.
    seed : int
        Seed of the shuffle, so that the same inputs give the same folds.

    Returns
    -------
    list of Fold
    """
    flags = np.asarray(is_failure, dtype=bool)
    normal = np.flatnonzero(~flags)
    failures = np.flatnonzero(flags)
    if n_folds < 2:
        raise ValueError(f"n_folds={n_folds}: cross-validation needs at least 2 folds")
    if len(normal) < n_folds:
        raise ValueError(
            f"n_folds={n_folds} but only "
            f"{format_count(len(normal), 'failure-free experiment')}; "
            "lower the number of folds or record more failure-free runs"
        )

    splitter = KFold(n_splits=n_folds, shuffle=True, random_state=seed)
    folds = []
    for i, (train_pos, test_pos) in enumerate(splitter.split(normal)):
        train = tuple(int(j) for j in sorted(normal[train_pos]))
        test = tuple(
            int(j) for j in sorted(np.concatenate([normal[test_pos], failures]))
        )
        folds.append(Fold(index=i, train=train, test=test))
    return folds
