"""Embeddings: a system graph becomes a vector of named features.

Embeddings are scikit-learn transformers held in a registry by name, so
that model files can name theirs and other packages can add their own with
:func:`register_embedding`.
"""

from __future__ import annotations

from typing import Any

from syslrn.embed.bag_of_nodes import BagOfNodes
from syslrn.embed.base import GraphEmbedding, split_feature_name, to_matrix, vocabulary
from syslrn.embed.wl import WeisfeilerLehman
from syslrn.errors import SyslrnError

#: Embeddings by registry name.
EMBEDDINGS: dict[str, type[GraphEmbedding]] = {}


def register_embedding(cls: type[GraphEmbedding]) -> type[GraphEmbedding]:
    """Add an embedding class to the registry under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__}: an embedding needs a non-empty name")
    EMBEDDINGS[cls.name] = cls
    return cls


def make_embedding(name: str, params: dict[str, Any] | None = None) -> GraphEmbedding:
    """Instantiate the registered embedding ``name`` with ``params``."""
    cls = EMBEDDINGS.get(name)
    if cls is None:
        raise SyslrnError(
            f"embedding {name!r} is unknown; choose one of {', '.join(sorted(EMBEDDINGS))}"
        )
    try:
        return cls(**(params or {}))
    except TypeError as exc:
        raise SyslrnError(
            f"embedding {name}: invalid parameters {params} ({exc})"
        ) from None


register_embedding(BagOfNodes)
register_embedding(WeisfeilerLehman)

__all__ = [
    "EMBEDDINGS",
    "BagOfNodes",
    "GraphEmbedding",
    "WeisfeilerLehman",
    "make_embedding",
    "register_embedding",
    "split_feature_name",
    "to_matrix",
    "vocabulary",
]
