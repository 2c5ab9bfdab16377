"""Cross-validation of an embedding and a normal-behaviour model on runs.

Folds come from :func:`syslrn.evaluate.folds.make_folds`: each fold trains
on failure-free runs only and tests on its held-out failure-free runs plus
every failure run. A fold's detector is a complete model file's content,
and a test run is judged by :meth:`syslrn.model.Model.detect`, the same
path as ``syslrn detect``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from syslrn.evaluate.folds import Fold
from syslrn.evaluate.metrics import Confusion
from syslrn.model.base import NormalModel
from syslrn.model.training import train_model
from syslrn.text import format_count

log = logging.getLogger(__name__)

METRICS = ("recall", "selectivity", "precision", "f1")


@dataclass
class FoldResult:
    """Verdicts of one fold's detector on its test runs."""

    index: int
    train: tuple[int, ...]
    test: tuple[int, ...]
    flagged: list[bool]
    kept: int
    degenerate: bool
    confusion: Confusion


@dataclass
class Evaluation:
    """The cross-validated results of one embedding and model combination."""

    embedding: str
    model: str
    folds: list[FoldResult]
    is_failure: list[bool]
    faults: list[str | None]
    notes: list[str] = field(default_factory=list)

    def fold_metrics(self) -> dict[str, list[float]]:
        """Return each metric's value on every fold."""
        return {m: [getattr(f.confusion, m) for f in self.folds] for m in METRICS}

    def summary(self) -> dict[str, float]:
        """Return each metric's mean over the folds (ignoring undefined folds)."""
        return {m: _nanmean(v) for m, v in self.fold_metrics().items()}

    def spread(self) -> dict[str, float]:
        """Return each metric's standard deviation over the folds."""
        return {m: _nanstd(v) for m, v in self.fold_metrics().items()}

    def pooled(self) -> Confusion:
        total = Confusion(0, 0, 0, 0)
        for fold in self.folds:
            total = total + fold.confusion
        return total

    def per_fault(self) -> dict[str, dict[str, Any]]:
        """Return, per fault, its failure runs and their mean recall over folds."""
        faults = sorted(
            {
                f or "unknown"
                for f, bad in zip(self.faults, self.is_failure, strict=True)
                if bad
            }
        )
        table = {}
        for fault in faults:
            members = {
                i
                for i, (f, bad) in enumerate(
                    zip(self.faults, self.is_failure, strict=True)
                )
                if bad and (f or "unknown") == fault
            }
            recalls = []
            for fold in self.folds:
                hits = [
                    flag
                    for i, flag in zip(fold.test, fold.flagged, strict=True)
                    if i in members
                ]
                if hits:
                    recalls.append(sum(hits) / len(hits))
            table[fault] = {"runs": len(members), "recall": _nanmean(recalls)}
        return table

    def to_dict(self) -> dict[str, Any]:
        return _clean(
            {
                "embedding": self.embedding,
                "model": self.model,
                **self.summary(),
                "std": self.spread(),
                "pooled": self.pooled().to_dict(),
                "per_fault": self.per_fault(),
                "per_fold": [
                    {
                        "fold": f.index,
                        "train": len(f.train),
                        "test": len(f.test),
                        "kept": f.kept,
                        "degenerate": f.degenerate,
                        **f.confusion.to_dict(),
                        **f.confusion.metrics(),
                    }
                    for f in self.folds
                ],
                "notes": self.notes,
            }
        )


def cross_validate(
    rows: Sequence[Mapping[str, float]],
    requests: Sequence[int],
    is_failure: Sequence[bool],
    faults: Sequence[str | None],
    folds: Sequence[Fold],
    *,
    embedding: Mapping[str, Any],
    describe: Callable[[str], tuple[str | None, str | None]],
    make_estimator: Callable[[], NormalModel],
) -> Evaluation:
    """Train and test one combination on every fold.

    Parameters
    ----------
    rows : sequence of mapping
        The feature dict of every experiment, in the folds' order.
    requests, is_failure, faults : sequences
        Per experiment: request count, ground truth and fault label.
    folds : sequence of Fold
    embedding : mapping
        ``{"name": ..., "params": {...}}`` of the rows' embedding.
    describe : callable
        Maps a feature name to its ``(stat, node_type)``.
    make_estimator : callable
        Returns a fresh, unfitted model for each fold.
    """
    results, notes = [], []
    for fold in folds:
        model = train_model(
            [rows[i] for i in fold.train],
            [requests[i] for i in fold.train],
            estimator=make_estimator(),
            embedding=embedding,
            describe=describe,
        )
        kept = len(model.kept_features)
        if kept == 0:
            notes.append(f"fold {fold.index}: no feature kept, so no run is flagged")
        flagged = [model.detect(rows[i], requests[i]).anomalous for i in fold.test]
        truth = [bool(is_failure[i]) for i in fold.test]
        results.append(
            FoldResult(
                index=fold.index,
                train=fold.train,
                test=fold.test,
                flagged=flagged,
                kept=kept,
                degenerate=model.degenerate,
                confusion=Confusion.of(truth, flagged),
            )
        )
        log.info(
            "fold %d: %s, %d of %s flagged",
            fold.index,
            format_count(kept, "kept feature"),
            sum(flagged),
            format_count(len(flagged), "test run"),
        )
    return Evaluation(
        embedding=str(embedding["name"]),
        model=make_estimator().name,
        folds=results,
        is_failure=[bool(b) for b in is_failure],
        faults=list(faults),
        notes=notes,
    )


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


def _nanstd(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.std(finite)) if finite else float("nan")


def _clean(value: Any) -> Any:
    """Replace NaN by None, recursively, so that the result is valid JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value
