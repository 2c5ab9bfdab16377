"""Normal-behaviour models, their detection rule and the model file.

Models are scikit-learn estimators held in a registry by name, so that
model files can name theirs and other packages can add their own with
:func:`register_model`.

Names are imported on first use: the online monitor reads model files and
applies the detection rule without loading scikit-learn, which would cost
it tens of megabytes of memory.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "CLASSES": "classes",
    "classify_node_types": "classes",
    "Detection": "detection",
    "FeatureCheck": "detection",
    "MODEL_FORMAT": "file",
    "MODEL_SCHEMA_VERSION": "file",
    "FeatureEntry": "file",
    "Model": "file",
    "load_model": "file",
    "save_model": "file",
    "NormalModel": "base",
    "LinearModel": "linear",
    "HuberModel": "robust",
    "MODELS": "registry",
    "make_model": "registry",
    "register_model": "registry",
    "RULE": "rule",
    "expected_values": "rule",
    "outside_tolerance": "rule",
    "train_model": "training",
}


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'syslrn.model' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"syslrn.model.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(_EXPORTS)


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
