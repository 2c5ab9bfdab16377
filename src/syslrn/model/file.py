"""The model file: what was learned, as JSON with a schema version.

The online monitor reads this file, so its keys are a contract::

    {"schema_version": 1, "format": "syslrn-model",
     "embedding": {"name": ..., "params": {...}},
     "model": {"name": ..., "params": {...}},
     "features": [{"name", "node_type", "stat", "kept", "r2", "slope",
                   "intercept", "tolerance", "reason"}, ...],
     "detection": {"rule": ..., "description": ...},
     "degenerate": false,
     "training": {"runs", "requests", "trigger", "driver_excluded",
                  "classes", "durations_s", "quiet_gap_s", ...},
     "plan": null}

Loading never runs code from the file: it is plain JSON, checked key by key.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from syslrn.errors import ModelError
from syslrn.model.detection import Detection
from syslrn.model.rule import RULE, RULE_DESCRIPTION, expected_values

log = logging.getLogger(__name__)

MODEL_FORMAT = "syslrn-model"
MODEL_SCHEMA_VERSION = 1

_TOP_KEYS = (
    "embedding",
    "model",
    "features",
    "detection",
    "degenerate",
    "training",
    "plan",
)


@dataclass
class FeatureEntry:
    """One feature of the model: its fit, whether it is kept, its tolerance."""

    name: str
    node_type: str | None
    stat: str | None
    kept: bool
    r2: float | None
    slope: float
    intercept: float
    tolerance: float
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "node_type": self.node_type,
            "stat": self.stat,
            "kept": self.kept,
            "r2": _finite_or_none(self.r2),
            "slope": float(self.slope),
            "intercept": float(self.intercept),
            "tolerance": float(self.tolerance),
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, entry: Any, source: str) -> FeatureEntry:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise ModelError(
                f"{source}: a features entry has no name; the file is corrupt"
            )
        name = entry["name"]
        numbers = {}
        for key in ("slope", "intercept", "tolerance"):
            value = entry.get(key)
            if not _is_number(value):
                raise ModelError(
                    f"{source}: feature {name}: {key}={value!r} is not a number"
                )
            numbers[key] = float(value)
        r2 = entry.get("r2")
        if r2 is not None and not _is_number(r2):
            raise ModelError(f"{source}: feature {name}: r2={r2!r} is not a number")
        if not isinstance(entry.get("kept"), bool):
            raise ModelError(f"{source}: feature {name}: kept must be true or false")
        return cls(
            name=name,
            node_type=entry.get("node_type"),
            stat=entry.get("stat"),
            kept=entry["kept"],
            r2=None if r2 is None else float(r2),
            reason=entry.get("reason"),
            **numbers,
        )


@dataclass
class Model:
    """A trained normal-behaviour model, as stored in a model file.

    Treat it as immutable once built: :meth:`detect` caches the kept
    features' coefficients as arrays.

    Attributes
    ----------
    embedding : dict
        ``{"name": ..., "params": {...}}`` of the embedding that made the
        features.
    model : dict
        ``{"name": ..., "params": {...}}`` of the normal-behaviour model.
    features : list of FeatureEntry
        Every feature seen in training, kept or rejected.
    detection : dict
        The detection rule (see :mod:`syslrn.model.rule`).
    degenerate : bool
        The training runs had one request count, so the expectations are
        constants.
    training : dict
        Facts on the training runs (counts, request counts, durations,
        classes of node types).
    plan : dict or None
        The monitor plan, filled by ``syslrn plan``.
    """

    embedding: dict[str, Any]
    model: dict[str, Any]
    features: list[FeatureEntry]
    detection: dict[str, Any] = field(
        default_factory=lambda: {"rule": RULE, "description": RULE_DESCRIPTION}
    )
    degenerate: bool = False
    training: dict[str, Any] = field(default_factory=dict)
    plan: dict[str, Any] | None = None

    @property
    def kept_features(self) -> list[FeatureEntry]:
        return [f for f in self.features if f.kept]

    @cached_property
    def _kept_arrays(self) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
        kept = self.kept_features
        return (
            [f.name for f in kept],
            np.array([f.slope for f in kept], dtype=np.float64),
            np.array([f.intercept for f in kept], dtype=np.float64),
            np.array([f.tolerance for f in kept], dtype=np.float64),
        )

    def expected(self, requests: int) -> dict[str, float]:
        """Return the expected value of each kept feature for a request count."""
        names, slope, intercept, _ = self._kept_arrays
        values = expected_values(slope, intercept, requests)
        return dict(zip(names, values.tolist(), strict=True))

    def detect(self, feature_vector: Mapping[str, float], requests: int) -> Detection:
        """Compare a run's (or a window's) features with the model.

        Parameters
        ----------
        feature_vector : mapping of str to float
            Feature values by name; a kept feature missing from it counts
            as 0 (no node of that type was seen).
        requests : int
            Requests counted at the trigger socket in the same run or window.

        Returns
        -------
        Detection
            Observed, expected and tolerance of every kept feature.
        """
        names, slope, intercept, tolerance = self._kept_arrays
        get = feature_vector.get
        observed = np.fromiter(
            (get(n, 0.0) for n in names), dtype=np.float64, count=len(names)
        )
        detection = Detection(
            requests=int(requests),
            features=names,
            observed=observed,
            expected=expected_values(slope, intercept, requests),
            tolerance=tolerance,
        )
        fixed = self.training.get("fixed_requests")
        if self.degenerate and fixed is not None and int(requests) != int(fixed):
            detection.notes.append(
                f"the model learned a fixed workload of {fixed} requests; "
                f"this run has {requests}, so its expectations may not apply"
            )
        return detection

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": MODEL_SCHEMA_VERSION,
            "format": MODEL_FORMAT,
            "embedding": self.embedding,
            "model": self.model,
            "features": [f.to_dict() for f in self.features],
            "detection": self.detection,
            "degenerate": bool(self.degenerate),
            "training": self.training,
            "plan": self.plan,
        }

    @classmethod
    def from_dict(cls, document: Any, source: str = "model") -> Model:
        """Check a decoded model document and build the model.

        Raises
        ------
        ModelError
            The document is not a syslrn model, is of another schema
            version, or lacks or mistypes a key.
        """
        if not isinstance(document, dict) or document.get("format") != MODEL_FORMAT:
            raise ModelError(
                f'{source}: not a syslrn model file (no "format": "{MODEL_FORMAT}")'
            )
        version = document.get("schema_version")
        if version != MODEL_SCHEMA_VERSION:
            raise ModelError(
                f"{source}: model schema version {version}, this syslrn reads version "
                f"{MODEL_SCHEMA_VERSION}; train the model again with this version"
            )
        missing = [key for key in _TOP_KEYS if key not in document]
        if missing:
            raise ModelError(
                f"{source}: model lacks keys {missing}; the file is corrupt"
            )
        for key in ("embedding", "model"):
            part = document[key]
            if not isinstance(part, dict) or not isinstance(part.get("name"), str):
                raise ModelError(f'{source}: "{key}" must be an object with a name')
        rule = (document["detection"] or {}).get("rule")
        if rule != RULE:
            raise ModelError(
                f"{source}: detection rule {rule!r} is unknown; this "
                f"syslrn applies {RULE!r}"
            )
        if not isinstance(document["features"], list):
            raise ModelError(f'{source}: "features" must be a list')
        return cls(
            embedding={
                "name": document["embedding"]["name"],
                "params": dict(document["embedding"].get("params") or {}),
            },
            model={
                "name": document["model"]["name"],
                "params": dict(document["model"].get("params") or {}),
            },
            features=[FeatureEntry.from_dict(f, source) for f in document["features"]],
            detection=dict(document["detection"]),
            degenerate=bool(document["degenerate"]),
            training=dict(document["training"] or {}),
            plan=document["plan"],
        )


def save_model(model: Model, path: str | os.PathLike) -> Path:
    """Write a model file, replacing ``path`` only once the file is whole."""
    path = Path(path)
    text = json.dumps(model.to_dict(), indent=2, allow_nan=False) + "\n"
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as exc:
        raise ModelError(
            f"output {path}: cannot write the model ({exc.strerror}); "
            "choose another path"
        ) from None
    log.info("model written to %s", path)
    return path


def load_model(path: str | os.PathLike) -> Model:
    """Read and check a model file.

    Raises
    ------
    ModelError
        The file is missing, not JSON, or not a valid model of this schema
        version. The message names the file.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ModelError(f"{path}: model file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: cannot read the model file ({exc})") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelError(
            f"{path}: not valid JSON ({exc}); the file is corrupt"
        ) from None
    return Model.from_dict(document, source=str(path))


def _is_number(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def _finite_or_none(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(value)
