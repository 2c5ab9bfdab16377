"""Hand-built models of count features, for tests that need a valid model
without training one."""

from __future__ import annotations

from syslrn.model import FeatureEntry, Model


def count_model(*node_types: str, slope: float = 2.0) -> Model:
    """Return a linear model that keeps ``count:T`` for each node type T,
    expecting ``slope`` processes per request with a tolerance of 1."""
    features = [
        FeatureEntry(
            name=f"count:{node_type}",
            node_type=node_type,
            stat="count",
            kept=True,
            r2=1.0,
            slope=slope,
            intercept=0.0,
            tolerance=1.0,
        )
        for node_type in node_types or ("worker",)
    ]
    return Model(
        embedding={"name": "bag-of-nodes", "params": {}},
        model={"name": "linear", "params": {}},
        features=features,
        training={"runs": 3, "requests": [4, 8, 12]},
    )
