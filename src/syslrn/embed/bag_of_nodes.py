"""Bag-of-nodes: per node type, the number of processes and their degree sum."""

from __future__ import annotations

import numpy as np

from syslrn.embed.base import GraphEmbedding
from syslrn.graph.system import SystemGraph


class BagOfNodes(GraphEmbedding):
    """Embed a system graph as ``count:T`` and ``degree:T`` for each node type T.

    ``count:T`` is the number of nodes of type T, ``degree:T`` the sum of
    their multigraph degrees. Both are sums over processes of quantities
    that a probe can count from each process's own events, so the online
    monitor can aggregate them in the kernel.

    Parameters
    ----------
    include_driver : bool, default=False
        In a driven run, also count the workload driver's processes. By
        default they are outside the system under test; their edges still
        add to the degree of the processes they touch.
    include_external : bool, default=False
        Also produce ``count:external`` and ``degree:external`` for the
        external endpoints.

    Attributes
    ----------
    feature_names_ : list of str
        Features seen in the graphs given to :meth:`fit`, sorted.

    Examples
    --------
    >>> from syslrn.embed import BagOfNodes
    >>> X = BagOfNodes().fit_transform(graphs)  # doctest: +SKIP
    """

    name = "bag-of-nodes"

    def __init__(self, include_driver: bool = False, include_external: bool = False):
        self.include_driver = include_driver
        self.include_external = include_external

    def features(self, graph: SystemGraph) -> dict[str, float]:
        mask = graph.feature_mask(self.include_driver, self.include_external)
        types = graph.type_index[mask]
        n_types = len(graph.type_names)
        counts = np.bincount(types, minlength=n_types)
        degrees = np.bincount(types, weights=graph.degree()[mask], minlength=n_types)
        features: dict[str, float] = {}
        for t in np.flatnonzero(counts):
            node_type = graph.type_names[t]
            features[f"count:{node_type}"] = float(counts[t])
            features[f"degree:{node_type}"] = float(degrees[t])
        return features
