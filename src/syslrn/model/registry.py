"""The registry of normal-behaviour models, by the name model files store."""

from __future__ import annotations

from typing import Any

from syslrn.errors import SyslrnError
from syslrn.model.base import NormalModel
from syslrn.model.linear import LinearModel
from syslrn.model.robust import HuberModel

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
