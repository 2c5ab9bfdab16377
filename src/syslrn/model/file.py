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
import reprlib
import stat
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from syslrn.collect.trigger import parse_trigger
from syslrn.errors import ModelError, SyslrnError
from syslrn.model.detection import Detection
from syslrn.model.rule import RULE, RULE_DESCRIPTION, expected_values
from syslrn.text import format_count

log = logging.getLogger(__name__)

MODEL_FORMAT = "syslrn-model"
MODEL_SCHEMA_VERSION = 1

#: Advice in error messages for a value that a hand edit broke.
_RETRAIN = "train the model again"

#: Advice in error messages for a file that is not a model of this version.
_GIVE_OR_RETRAIN = "give a model file written by syslrn train, or train the model again"

#: The first bytes of every Parquet file, and so of every trace.
_PARQUET_MAGIC = b"PAR1"

#: Max magnitude of a slope, intercept or tolerance. A feature counts
#: processes or edges, so larger values are meaningless, and above 2**53 a
#: float64 cannot represent every integer.
MAX_COEFFICIENT = 2**53

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
        """Check one decoded ``features`` entry and build it.

        Raises
        ------
        ModelError
            A key is missing or mistyped, a coefficient is not finite or
            exceeds :data:`MAX_COEFFICIENT` in magnitude, or the tolerance is
            negative. The message names ``source`` and the feature.
        """
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise ModelError(
                f"{source}: a features entry has no name, so the file is corrupt; "
                f"correct it in the file or {_RETRAIN}"
            )
        name = entry["name"]
        where = f"{source}: feature {name}"
        numbers = {
            key: _check_field(entry.get(key), f"{where}: {key}", _is_number, "a number")
            for key in ("slope", "intercept", "tolerance")
        }
        # An expected value is slope * requests + intercept, so a huge
        # coefficient would overflow to infinity, which JSON cannot carry.
        for key, value in numbers.items():
            if abs(value) > MAX_COEFFICIENT:
                raise ModelError(
                    f"{where}: {key}={value!r} exceeds 2**53 in magnitude, which "
                    "no count of processes or edges reaches; correct it in the "
                    f"file or {_RETRAIN}"
                )
        # The detection rule flags |deviation| > tolerance, so a negative
        # tolerance would flag every run, even one that matches exactly.
        if numbers["tolerance"] < 0:
            raise ModelError(
                f"{where}: tolerance={numbers['tolerance']!r} is negative, which "
                f"would flag every run; set it to 0 or more, or {_RETRAIN}"
            )
        r2 = _check_optional(entry.get("r2"), f"{where}: r2", _is_number, "a number")
        kept = _check_field(
            entry.get("kept"), f"{where}: kept", _is_bool, "true or false"
        )
        text = {
            key: _check_optional(entry.get(key), f"{where}: {key}", _is_str, "a string")
            for key in ("node_type", "stat", "reason")
        }
        return cls(
            name=name,
            kept=kept,
            r2=None if r2 is None else float(r2),
            **{key: float(value) for key, value in numbers.items()},
            **text,
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
                "the model learned a fixed workload of "
                f"{format_count(int(fixed), 'request')}; this run has {requests}, "
                "so its expectations may not apply"
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
            version, lacks or mistypes a key, lists a feature twice, or gives
            one a coefficient out of range or a negative tolerance. The
            message names ``source``.
        """
        if not isinstance(document, dict) or document.get("format") != MODEL_FORMAT:
            raise ModelError(
                f'{source}: not a syslrn model file (no "format": "{MODEL_FORMAT}"); '
                "give a model file written by syslrn train"
            )
        if "schema_version" not in document:
            raise ModelError(
                f"{source}: model has no schema_version key, and this syslrn reads "
                f"version {MODEL_SCHEMA_VERSION}; {_RETRAIN} with this version"
            )
        version = document["schema_version"]
        if version != MODEL_SCHEMA_VERSION:
            raise ModelError(
                f"{source}: model schema version {version!r}, this syslrn reads "
                f"version {MODEL_SCHEMA_VERSION}; {_RETRAIN} with this version"
            )
        missing = [key for key in _TOP_KEYS if key not in document]
        if missing:
            raise ModelError(
                f"{source}: model lacks keys {missing}, so the file is corrupt or "
                f"cut short; {_GIVE_OR_RETRAIN}"
            )
        parts = {
            key: _check_part(document[key], f"{source}: {key}")
            for key in ("embedding", "model")
        }
        detection = _check_field(
            document["detection"], f"{source}: detection", _is_object, "an object"
        )
        rule = detection.get("rule")
        if rule != RULE:
            raise ModelError(
                f"{source}: detection rule {rule!r} is unknown; this syslrn applies "
                f"{RULE!r}, so set the rule to it or {_RETRAIN} with this version"
            )
        features = _check_field(
            document["features"], f"{source}: features", _is_list, "a list"
        )
        entries = [FeatureEntry.from_dict(f, source) for f in features]
        counts = Counter(entry.name for entry in entries)
        repeated = sorted(name for name, count in counts.items() if count > 1)
        if repeated:
            raise ModelError(
                f"{source}: features {repeated} are listed more than once; keep "
                f"one entry per feature, or {_RETRAIN}"
            )
        degenerate = _check_field(
            document["degenerate"], f"{source}: degenerate", _is_bool, "true or false"
        )
        plan = _check_optional(
            document["plan"], f"{source}: plan", _is_object, "an object"
        )
        return cls(
            embedding=parts["embedding"],
            model=parts["model"],
            features=entries,
            detection=dict(detection),
            degenerate=degenerate,
            training=_check_training(document["training"], source),
            plan=plan,
        )


def save_model(model: Model, path: str | os.PathLike) -> Path:
    """Write a model file, replacing ``path`` only once the file is whole.

    A symlink at ``path`` is resolved, so its target gets the new model and
    the link stays. An existing file keeps its permission bits, and a new
    one gets the umask's default.

    NOTE: the owner and group are not kept, so a model that root rewrites
    for another user becomes root's.
    """
    path = Path(path)
    text = json.dumps(model.to_dict(), indent=2, allow_nan=False) + "\n"
    target = path.resolve()
    tmp = target.with_name(target.name + ".tmp")
    try:
        try:
            mode = stat.S_IMODE(target.stat().st_mode)
        except FileNotFoundError:
            mode = None
        _write_new_file(tmp, text, mode)
        os.replace(tmp, target)
    except OSError as exc:
        raise ModelError(
            f"output {path}: cannot write the model ({exc.strerror}); "
            "choose another path"
        ) from None
    log.info("model written to %s", path)
    return path


def _write_new_file(path: Path, text: str, mode: int | None) -> None:
    """Create ``path`` afresh with permission bits ``mode`` and write ``text``.

    With ``mode`` None, the umask sets the bits. Otherwise the file is
    created with mode 0600 and gets ``mode`` before any text is written, so
    no other user can open it early and read the model.
    """
    path.unlink(missing_ok=True)
    create_mode = 0o666 if mode is None else 0o600
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, create_mode)
    with os.fdopen(fd, "w") as file:
        if mode is not None:
            os.fchmod(file.fileno(), mode)
        file.write(text)


def load_model(path: str | os.PathLike) -> Model:
    """Read and check a model file.

    Raises
    ------
    ModelError
        The file is missing, unreadable, a Parquet trace, not JSON, or not a
        valid model of this schema version. The message names the file and
        says what to give instead.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ModelError(
            f"{path}: model file not found; check the path, or make a model with "
            f"syslrn train TRACE... -o {path}"
        ) from None
    except OSError as exc:
        raise ModelError(
            f"{path}: cannot read the model file ({exc.strerror}); give a readable "
            "model file written by syslrn train"
        ) from None

    if data.startswith(_PARQUET_MAGIC):
        raise ModelError(
            f"{path}: this is a Parquet trace file, not a model; make a model from "
            "traces with syslrn train TRACE... -o model.json"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ModelError(
            f"{path}: not a text file ({exc}), so not a model file; {_GIVE_OR_RETRAIN}"
        ) from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelError(
            f"{path}: not valid JSON ({exc}), so the file is corrupt or not a "
            f"model; {_GIVE_OR_RETRAIN}"
        ) from None

    return Model.from_dict(document, source=str(path))


def require_kept_features(model: Model, source: str) -> None:
    """Raise ModelError naming ``source`` when the model keeps no feature.

    ``syslrn train`` writes no such model, but a hand edit can leave one,
    and it would pass every run as normal.
    """
    if not model.kept_features:
        raise ModelError(
            f"{source}: the model keeps no feature, so it cannot flag any run; set "
            f'"kept": true on at least one feature or {_RETRAIN}'
        )


def _check_field(
    value: Any, where: str, is_valid: Callable[[Any], bool], expected: str
) -> Any:
    """Return ``value`` unchanged, or raise ModelError if ``is_valid`` rejects it."""
    if not is_valid(value):
        raise ModelError(
            f"{where}={reprlib.repr(value)} is not {expected}; correct it in the "
            f"file or {_RETRAIN}"
        )
    return value


def _check_optional(
    value: Any, where: str, is_valid: Callable[[Any], bool], expected: str
) -> Any:
    """Return ``value`` unchanged if it is None or passes ``is_valid``."""
    if value is None:
        return None
    return _check_field(value, where, is_valid, expected)


def _check_part(value: Any, where: str) -> dict[str, Any]:
    """Check an ``{"name": ..., "params": {...}}`` object and return a copy."""
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        raise ModelError(
            f"{where} must be an object with a name, so the file is corrupt; "
            f"correct it in the file or {_RETRAIN}"
        )
    params = _check_optional(
        value.get("params"), f"{where}: params", _is_object, "an object"
    )
    return {"name": value["name"], "params": dict(params or {})}


def _check_training(value: Any, source: str) -> dict[str, Any]:
    """Check the training facts that syslrn reads back, and return a copy.

    Keys that syslrn does not read are kept unchecked.
    """
    training = _check_optional(value, f"{source}: training", _is_object, "an object")
    training = dict(training or {})
    for key, (is_valid, expected) in _TRAINING_FIELDS.items():
        _check_optional(
            training.get(key), f"{source}: training.{key}", is_valid, expected
        )
    trigger = training.get("trigger")
    if trigger is not None:
        try:
            parse_trigger(trigger)
        except SyslrnError as exc:
            raise ModelError(
                f"{source}: training.trigger: {exc}; correct it in the file or "
                f"{_RETRAIN}"
            ) from None
    return training


def _is_number(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def _is_non_negative(value: Any) -> bool:
    return _is_number(value) and value >= 0


def _is_count(value: Any) -> bool:
    return _is_non_negative(value) and float(value).is_integer()


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool)


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


def _is_object(value: Any) -> bool:
    return isinstance(value, dict)


def _is_list(value: Any) -> bool:
    return isinstance(value, list)


def _list_of(is_item: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, list) and all(map(is_item, value))


def _object_of(is_item: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, dict) and all(map(is_item, value.values()))


#: Training facts that syslrn reads back: the report plots and lists them,
#: detection notes ``fixed_requests``, and the monitor sizes its windows from
#: ``quiet_gap_s``. Each may be null.
_TRAINING_FIELDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "runs": (_is_count, "a whole number of 0 or more"),
    "requests": (_list_of(_is_count), "a list of request counts"),
    "fixed_requests": (_is_count, "a whole number of 0 or more"),
    "quiet_gap_s": (_is_non_negative, "a number of seconds of 0 or more"),
    "durations_s": (
        _list_of(lambda item: item is None or _is_non_negative(item)),
        "a list of durations in seconds",
    ),
    "trigger": (_is_str, "a trigger such as tcp:5432"),
    "driver_excluded": (_is_bool, "true or false"),
    "run_names": (_list_of(_is_str), "a list of run names"),
    "classes": (_object_of(_is_str), "an object of node types and their classes"),
    "observations": (
        _object_of(_list_of(_is_number)),
        "an object of feature names and lists of numbers",
    ),
}


def _finite_or_none(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(value)
