"""Normal-behaviour models, their detection rule and the model file.

Models are scikit-learn estimators held in a registry by name, so that
model files can name theirs and other packages can add their own with
:func:`register_model`.
"""

from __future__ import annotations

from typing import Any

from syslrn.errors import SyslrnError
from syslrn.model.base import NormalModel
from syslrn.model.classes import CLASSES, classify_node_types
from syslrn.model.detection import Detection, FeatureCheck
from syslrn.model.file import (
    MODEL_FORMAT,
    MODEL_SCHEMA_VERSION,
    FeatureEntry,
    Model,
    load_model,
    save_model,
)
from syslrn.model.linear import LinearModel
from syslrn.model.robust import HuberModel
from syslrn.model.rule import RULE, expected_values, outside_tolerance
from syslrn.model.training import train_model

#: Normal-behaviour models by registry name.
MODELS: dict[str, type[NormalModel]] = {}


def register_model(cls: type[NormalModel]) -> type[NormalModel]:
    """Add a model class to the registry under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__}: a model needs a non-empty name")
    MODELS[cls.name] = cls
    return cls


def make_model(name: str, params: dict[str, Any] | None = None) -> NormalModel:
    """Instantiate the registered model ``name`` with ``params``."""
    cls = MODELS.get(name)
    if cls is None:
        raise SyslrnError(
            f"model {name!r} is unknown; choose one of {', '.join(sorted(MODELS))}"
        )
    try:
        return cls(**(params or {}))
    except TypeError as exc:
        raise SyslrnError(
            f"model {name}: invalid parameters {params} ({exc})"
        ) from None


register_model(LinearModel)
register_model(HuberModel)

__all__ = [
    "CLASSES",
    "MODELS",
    "MODEL_FORMAT",
    "MODEL_SCHEMA_VERSION",
    "RULE",
    "Detection",
    "FeatureCheck",
    "FeatureEntry",
    "HuberModel",
    "LinearModel",
    "Model",
    "NormalModel",
    "classify_node_types",
    "expected_values",
    "load_model",
    "make_model",
    "outside_tolerance",
    "register_model",
    "save_model",
    "train_model",
]
