"""Base of graph embeddings: a system graph becomes a vector of named features."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import ClassVar

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from syslrn.graph.system import SystemGraph


def split_feature_name(name: str) -> tuple[str | None, str | None]:
    """Return the ``(stat, node_type)`` of a feature named ``stat:node_type``.

    Names without a colon have neither.
    """
    stat, sep, node_type = name.partition(":")
    if not sep:
        return None, None
    return stat, node_type


def vocabulary(rows: Iterable[Mapping[str, float]]) -> list[str]:
    """Return the sorted union of the feature names of ``rows``."""
    names: set[str] = set()
    for row in rows:
        names.update(row)
    return sorted(names)


def to_matrix(rows: Sequence[Mapping[str, float]], names: Sequence[str]) -> np.ndarray:
    """Stack feature dicts into an array with one column per name.

    A name missing from a row is 0: the row's graph has no node of it.
    """
    matrix = np.zeros((len(rows), len(names)), dtype=np.float64)
    column = {name: j for j, name in enumerate(names)}
    for i, row in enumerate(rows):
        for name, value in row.items():
            j = column.get(name)
            if j is not None:
                matrix[i, j] = value
    return matrix


class GraphEmbedding(TransformerMixin, BaseEstimator):
    """A map from system graphs to named features, as a scikit-learn transformer.

    Subclasses implement :meth:`features` for one graph. :meth:`fit` learns
    the feature names seen in the training graphs (``feature_names_``).
    :meth:`transform` returns one row per graph over those names, so that
    graphs of new runs line up with the training runs.
    """

    #: Registry name, also stored in model files.
    name: ClassVar[str] = ""

    def features(self, graph: SystemGraph) -> dict[str, float]:
        """Return the features of one graph, by name."""
        raise NotImplementedError

    def describe(self, feature: str) -> tuple[str | None, str | None]:
        """Return the ``(stat, node_type)`` a feature name stands for."""
        return split_feature_name(feature)

    def fit(self, graphs: Sequence[SystemGraph], y=None) -> GraphEmbedding:
        self._fit_rows([self.features(g) for g in graphs])
        return self

    def fit_transform(
        self, graphs: Sequence[SystemGraph], y=None, **fit_params
    ) -> np.ndarray:
        rows = [self.features(g) for g in graphs]
        self._fit_rows(rows)
        return to_matrix(rows, self.feature_names_)

    def transform(self, graphs: Sequence[SystemGraph]) -> np.ndarray:
        check_is_fitted(self, "feature_names_")
        return to_matrix([self.features(g) for g in graphs], self.feature_names_)

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        check_is_fitted(self, "feature_names_")
        return np.asarray(self.feature_names_, dtype=object)

    def _fit_rows(self, rows: Sequence[Mapping[str, float]]) -> None:
        self.feature_names_ = vocabulary(rows)
        self.n_features_out_ = len(self.feature_names_)
