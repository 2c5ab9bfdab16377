"""Weisfeiler-Lehman subtree features: counts of nodes by neighbourhood shape."""

from __future__ import annotations

import hashlib

import numpy as np

from syslrn.embed.base import GraphEmbedding
from syslrn.graph.system import EDGE_KINDS, SystemGraph

_HASH_BITS = 48


def _mix(x: np.ndarray) -> np.ndarray:
    """Scramble 64-bit values (the splitmix64 finalizer), element-wise."""
    x = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _string_hash(text: str) -> int:
    return int.from_bytes(
        hashlib.blake2b(text.encode(), digest_size=8).digest(), "little"
    )


# One salt per (direction, edge kind), so that "forked by a shell" and
# "forked a shell" give different neighbourhoods.
_OUT_SALT = np.array([_string_hash(f"out:{k}") for k in EDGE_KINDS], dtype=np.uint64)
_IN_SALT = np.array([_string_hash(f"in:{k}") for k in EDGE_KINDS], dtype=np.uint64)


class WeisfeilerLehman(GraphEmbedding):
    """Embed a system graph as counts of Weisfeiler-Lehman subtree labels.

    Iteration 0 labels each node by its node type. Iteration i relabels a
    node by its label at i - 1 and the multiset of its neighbours' labels,
    each tagged with the edge kind and direction. The feature
    ``wl{i}:{T}:{hash}`` counts the nodes of type T with one label of
    iteration i; ``wl0:{T}`` equals ``count:T`` of bag-of-nodes. Labels are
    hashes of their content, so the same neighbourhood gives the same
    feature name in every run.

    Parameters
    ----------
    iterations : int, default=2
        Number of relabelling rounds.
    include_driver : bool, default=False
        In a driven run, also count the driver's processes as roots. They are
        neighbours of the system's processes either way.
    include_external : bool, default=False
        Also count external endpoints as roots.

    Attributes
    ----------
    feature_names_ : list of str
    """

    name = "wl"

    def __init__(
        self,
        iterations: int = 2,
        include_driver: bool = False,
        include_external: bool = False,
    ):
        self.iterations = iterations
        self.include_driver = include_driver
        self.include_external = include_external

    def describe(self, feature: str) -> tuple[str | None, str | None]:
        stat, _, rest = feature.partition(":")
        if stat != "wl0":
            rest = rest.rpartition(":")[0]
        return stat, rest

    def features(self, graph: SystemGraph) -> dict[str, float]:
        if int(self.iterations) < 0:
            raise ValueError(f"iterations={self.iterations}: must be 0 or more")
        names = graph.type_names
        mask = graph.feature_mask(self.include_driver, self.include_external)
        roots = graph.type_index[mask]

        features: dict[str, float] = {}
        counts = np.bincount(roots, minlength=len(names))
        for t in np.flatnonzero(counts):
            features[f"wl0:{names[t]}"] = float(counts[t])

        type_hash = np.array([_string_hash(n) for n in names], dtype=np.uint64)
        label = type_hash[graph.type_index] if graph.n_nodes else np.zeros(0, np.uint64)
        ends = np.concatenate([graph.src, graph.dst])
        with np.errstate(over="ignore"):
            for i in range(1, int(self.iterations) + 1):
                label = self._relabel(graph, label, ends)
                short = label[mask] >> np.uint64(64 - _HASH_BITS)
                values, first, count = np.unique(
                    short, return_index=True, return_counts=True
                )
                for value, j, c in zip(values.tolist(), first, count, strict=True):
                    features[f"wl{i}:{names[roots[j]]}:{value:012x}"] = float(c)
        return features

    @staticmethod
    def _relabel(graph: SystemGraph, label: np.ndarray, ends: np.ndarray) -> np.ndarray:
        # A multiset of neighbour labels hashes to the wrapping sum of its
        # members' hashes, which does not depend on edge order.
        out_token = _mix(label[graph.dst] ^ _OUT_SALT[graph.edge_kind])
        in_token = _mix(label[graph.src] ^ _IN_SALT[graph.edge_kind])
        neighbourhood = np.zeros(graph.n_nodes, dtype=np.uint64)
        np.add.at(neighbourhood, ends, np.concatenate([out_token, in_token]))
        return _mix(_mix(label) ^ neighbourhood)
