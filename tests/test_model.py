"""Normal-behaviour models: R^2 selection, tolerances, the model file."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone

from syslrn.errors import ModelError, SyslrnError
from syslrn.graph import build_graph
from syslrn.model import (
    HuberModel,
    LinearModel,
    Model,
    classify_node_types,
    load_model,
    make_model,
    save_model,
    train_model,
)
from syslrn.model.rule import RULE
from syslrn.trace import table_from_rows, write_trace

REQUESTS = np.array([10, 20, 30, 40, 50, 60, 70, 80], dtype=float)


def _with_r2(r2: float, seed: int = 0) -> np.ndarray:
    """Return 3 * requests + 5 plus noise that gives the fit exactly this R^2.

    The noise is orthogonal to the constant and to the requests, so least
    squares recovers the line and leaves the noise as residual.
    """
    rng = np.random.default_rng(seed)
    basis = np.column_stack([np.ones_like(REQUESTS), REQUESTS])
    noise = rng.normal(size=len(REQUESTS))
    noise -= basis @ np.linalg.lstsq(basis, noise, rcond=None)[0]
    noise /= np.linalg.norm(noise)
    signal = 3 * REQUESTS + 5
    explained = ((signal - signal.mean()) ** 2).sum()
    return signal + np.sqrt(explained * (1 - r2) / r2) * noise


def test_linear_recovers_known_r2():
    X = np.column_stack(
        [_with_r2(0.99), _with_r2(0.91, 1), _with_r2(0.89, 2), _with_r2(0.5, 3)]
    )
    model = LinearModel().fit(X, REQUESTS)

    np.testing.assert_allclose(model.r2_, [0.99, 0.91, 0.89, 0.5], atol=1e-10)
    np.testing.assert_allclose(model.slope_, 3.0, atol=1e-10)
    np.testing.assert_allclose(model.intercept_, 5.0, atol=1e-8)
    assert model.kept_.tolist() == [True, True, False, False]
    assert model.reason_ == [None, None, "r2-below-threshold", "r2-below-threshold"]


def test_r2_threshold_is_a_parameter():
    X = np.column_stack([_with_r2(0.99), _with_r2(0.91, 1)])
    model = LinearModel(r2_threshold=0.95).fit(X, REQUESTS)

    assert model.kept_.tolist() == [True, False]


def test_tolerance_from_residual_scale():
    y = _with_r2(0.95)
    model = LinearModel(tolerance_k=3.0, tolerance_floor=0.5).fit(y[:, None], REQUESTS)
    residual = y - (3 * REQUESTS + 5)
    scale = np.sqrt((residual**2).sum() / (len(y) - 2))

    np.testing.assert_allclose(model.scale_, [scale])
    np.testing.assert_allclose(model.tolerance_, [3.0 * scale])


def test_exact_fit_gets_floor_tolerance():
    model = LinearModel().fit((2 * REQUESTS)[:, None], REQUESTS)

    assert model.r2_[0] == pytest.approx(1.0)
    assert model.tolerance_.tolist() == [1.0]


def test_constant_feature_is_rejected():
    model = LinearModel().fit(np.ones((len(REQUESTS), 1)), REQUESTS)

    assert np.isnan(model.r2_[0])
    assert not model.kept_[0]
    assert model.reason_ == ["constant"]


def test_predict_flags_beyond_tolerance_only():
    model = LinearModel().fit((2 * REQUESTS)[:, None], REQUESTS)
    observed = np.array([[20.0], [21.0], [22.5], [17.0]])

    # Expected 20 with tolerance 1: a deviation of exactly 1 passes.
    assert model.predict(observed, np.full(4, 10)).tolist() == [
        False,
        False,
        True,
        True,
    ]
    np.testing.assert_allclose(
        model.deviation(observed, np.full(4, 10))[:, 0], [0, 1, 2.5, -3], atol=1e-9
    )


def test_rejected_features_never_flag():
    X = np.column_stack([2 * REQUESTS, _with_r2(0.5)])
    model = LinearModel().fit(X, REQUESTS)

    assert not model.predict([[20.0, 1e6]], [10])[0]


def test_fixed_workload_keeps_stable_features():
    rng = np.random.default_rng(0)
    stable = 100 + rng.normal(0, 1, 12)
    unstable = rng.integers(0, 10, 12).astype(float)
    model = LinearModel().fit(
        np.column_stack([stable, unstable, np.zeros(12)]), np.full(12, 50)
    )

    assert model.degenerate_
    assert model.kept_.tolist() == [True, False, False]
    assert model.reason_ == [None, "unstable", "always-zero"]
    np.testing.assert_allclose(model.slope_, 0.0)
    assert model.intercept_[0] == pytest.approx(stable.mean())
    assert model.tolerance_[0] == pytest.approx(max(4 * stable.std(ddof=1), 1.0))


def test_huber_resists_outlying_training_run():
    clean = 2 * REQUESTS + 3
    dirty = clean.copy()
    dirty[2] += 40
    X = np.column_stack([dirty])
    huber = HuberModel().fit(X, REQUESTS)
    linear = LinearModel().fit(X, REQUESTS)

    assert huber.slope_[0] == pytest.approx(2.0, abs=1e-6)
    assert huber.kept_[0]
    assert huber.tolerance_[0] == pytest.approx(1.0)
    assert abs(linear.slope_[0] - 2.0) > 0.05
    assert linear.tolerance_[0] > 20
    assert huber.predict(X, REQUESTS).tolist() == [i == 2 for i in range(len(REQUESTS))]


def test_huber_matches_least_squares_on_clean_data():
    y = _with_r2(0.97)
    huber = HuberModel().fit(y[:, None], REQUESTS)

    assert huber.slope_[0] == pytest.approx(3.0, rel=0.05)
    assert huber.kept_[0]


def test_models_reject_bad_input():
    with pytest.raises(ValueError, match="one request count per run"):
        LinearModel().fit(np.ones((3, 2)), [1, 2])
    with pytest.raises(ValueError, match="r2_threshold=1.5"):
        LinearModel(r2_threshold=1.5).fit(np.ones((3, 1)), [1, 2, 3])


def test_models_are_sklearn_estimators():
    model = HuberModel(epsilon=2.0)

    assert clone(model).get_params() == model.get_params()
    assert isinstance(make_model("huber", {"epsilon": 2.0}), HuberModel)
    with pytest.raises(SyslrnError, match="model 'ridge' is unknown"):
        make_model("ridge")


def _trained(requests=REQUESTS, estimator=None):
    rows = [
        {
            "count:worker": 2 * r,
            "degree:worker": 2 * r,
            "count:cron": 1.0,
            "degree:cron": float(i % 3),
        }
        for i, r in enumerate(requests)
    ]
    return train_model(
        rows,
        [int(r) for r in requests],
        estimator=estimator or LinearModel(),
        embedding={"name": "bag-of-nodes", "params": {"include_driver": False}},
        describe=lambda name: tuple(name.split(":", 1)),
        training={"durations_s": [1.0] * len(requests)},
    )


def test_train_model_builds_feature_entries():
    model = _trained()
    by_name = {f.name: f for f in model.features}

    assert [f.name for f in model.kept_features] == ["count:worker", "degree:worker"]
    assert by_name["count:worker"].node_type == "worker"
    assert by_name["count:worker"].stat == "count"
    assert by_name["count:worker"].slope == pytest.approx(2.0)
    assert by_name["count:cron"].r2 is None
    assert model.training["runs"] == len(REQUESTS)
    assert model.training["observations"]["count:worker"] == (2 * REQUESTS).tolist()
    assert "count:cron" not in model.training["observations"]


def test_model_detect_reports_each_kept_feature():
    model = _trained()
    detection = model.detect({"count:worker": 40.0, "degree:worker": 30.0}, 20)

    assert detection.features == ["count:worker", "degree:worker"]
    assert detection.anomalous
    deviating = detection.deviating()
    assert [c.feature for c in deviating] == ["degree:worker"]
    assert deviating[0].observed == 30.0
    assert deviating[0].expected == pytest.approx(40.0)
    assert deviating[0].tolerance == 1.0
    assert deviating[0].deviation == pytest.approx(-10.0)


def test_model_detect_counts_missing_feature_as_zero():
    detection = _trained().detect({}, 5)

    assert detection.observed.tolist() == [0.0, 0.0]
    assert detection.anomalous


def test_model_expected_values():
    assert _trained().expected(7) == pytest.approx(
        {"count:worker": 14.0, "degree:worker": 14.0}
    )


def test_model_detect_agrees_with_estimator():
    rng = np.random.default_rng(5)
    estimator = LinearModel()
    model = _trained(estimator=estimator)
    names = [f.name for f in model.features]
    for _ in range(50):
        requests = int(rng.integers(0, 100))
        row = {
            "count:worker": 2 * requests + float(rng.integers(-2, 3)),
            "degree:worker": 2 * requests + float(rng.integers(-2, 3)),
            "count:cron": 1.0,
            "degree:cron": 0.0,
        }
        X = np.array([[row[n] for n in names]])
        assert model.detect(row, requests).anomalous == bool(
            estimator.predict(X, [requests])[0]
        )


def test_model_file_round_trip(tmp_path):
    model = _trained()
    path = save_model(model, tmp_path / "model.json")
    loaded = load_model(path)

    assert loaded.to_dict() == model.to_dict()
    document = json.loads(path.read_text())
    assert document["schema_version"] == 1
    assert document["format"] == "syslrn-model"
    assert document["plan"] is None
    assert set(document["features"][0]) >= {
        "name",
        "node_type",
        "stat",
        "kept",
        "r2",
        "slope",
        "intercept",
        "tolerance",
    }
    row = {"count:worker": 41.0, "degree:worker": 30.0}
    assert loaded.detect(row, 20).to_dict() == model.detect(row, 20).to_dict()


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o604], ids=oct)
def test_save_model_keeps_file_mode(tmp_path, mode):
    path = save_model(_trained(), tmp_path / "model.json")
    path.chmod(mode)

    save_model(_trained(requests=REQUESTS + 1), path)

    assert stat.S_IMODE(path.stat().st_mode) == mode
    assert load_model(path).training["requests"] == [int(r) + 1 for r in REQUESTS]


def test_save_model_new_file_follows_umask(tmp_path):
    umask = os.umask(0o027)
    try:
        path = save_model(_trained(), tmp_path / "model.json")
    finally:
        os.umask(umask)

    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_save_model_writes_through_symlink(tmp_path):
    (tmp_path / "models").mkdir()
    target = save_model(_trained(), tmp_path / "models" / "v1.json")
    link = tmp_path / "model.json"
    link.symlink_to(Path("models") / "v1.json")

    save_model(_trained(requests=REQUESTS + 1), link)

    assert link.is_symlink()
    assert link.resolve() == target
    assert load_model(target).training["requests"][0] == int(REQUESTS[0]) + 1
    assert sorted(p.name for p in target.parent.iterdir()) == ["v1.json"]


def test_model_of_other_version_names_both(tmp_path):
    document = _trained().to_dict()
    document["schema_version"] = 7
    path = tmp_path / "future.json"
    path.write_text(json.dumps(document))

    with pytest.raises(ModelError, match="version 7, this syslrn reads version 1"):
        load_model(path)


def _model_text_without(key):
    document = _trained().to_dict()
    del document[key]
    return json.dumps(document)


GIVE_MODEL = "give a model file written by syslrn train"
RETRAIN = "train the model again"


@pytest.mark.parametrize(
    "text, messages",
    [
        ("{not json", ["not valid JSON", "corrupt or not a model", GIVE_MODEL]),
        ('{"format": "other"}', ["not a syslrn model file", GIVE_MODEL]),
        (
            '{"format": "syslrn-model"}',
            ["no schema_version key", "reads version 1", f"{RETRAIN} with this"],
        ),
        (
            '{"format": "syslrn-model", "schema_version": 1}',
            ["model lacks keys", "the file is corrupt", RETRAIN],
        ),
        (
            _model_text_without("features"),
            ["lacks keys ['features']", "corrupt", RETRAIN],
        ),
        (
            _model_text_without("training"),
            ["lacks keys ['training']", "corrupt", RETRAIN],
        ),
    ],
    ids=[
        "not-json",
        "other-format",
        "no-version",
        "no-keys",
        "no-features",
        "no-training",
    ],
)
def test_invalid_model_files(tmp_path, text, messages):
    path = tmp_path / "bad.json"
    path.write_text(text)

    with pytest.raises(ModelError) as error:
        load_model(path)
    assert str(error.value).startswith(f"{path}: ")
    for message in messages:
        assert message in str(error.value)


def test_trace_given_as_model(tmp_path):
    row = {"ts_ns": 1, "host": "h", "kind": "exec", "pid": 2, "start_ns": 1}
    path = write_trace(tmp_path / "run.parquet", table_from_rows([row]), {})

    with pytest.raises(ModelError) as error:
        load_model(path)
    assert str(error.value).startswith(f"{path}: ")
    assert "Parquet trace file, not a model" in str(error.value)
    assert "syslrn train TRACE... -o model.json" in str(error.value)


def test_binary_file_given_as_model(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"\x00\xb0\xff")

    with pytest.raises(ModelError) as error:
        load_model(path)
    assert str(error.value).startswith(f"{path}: ")
    assert "not a text file" in str(error.value)
    assert GIVE_MODEL in str(error.value)


def test_directory_given_as_model(tmp_path):
    with pytest.raises(ModelError) as error:
        load_model(tmp_path)
    assert str(error.value).startswith(f"{tmp_path}: ")
    assert "cannot read the model file (Is a directory)" in str(error.value)
    assert "give a readable model file" in str(error.value)


def test_model_with_bad_feature_is_rejected(tmp_path):
    document = _trained().to_dict()
    document["features"][0]["slope"] = "steep"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(document))

    with pytest.raises(ModelError, match="slope='steep' is not a number"):
        load_model(path)


def _edit_kept(document, **values):
    next(f for f in document["features"] if f["kept"]).update(values)


def _repeat_feature(document):
    document["features"].append(dict(document["features"][0]))


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda d: _edit_kept(d, tolerance=-0.5),
            "tolerance=-0.5 is negative, which would flag every run",
        ),
        (lambda d: _edit_kept(d, tolerance=None), "tolerance=None is not a number"),
        (lambda d: _edit_kept(d, kept="yes"), "kept='yes' is not true or false"),
        (lambda d: _edit_kept(d, node_type=5), "node_type=5 is not a string"),
        (_repeat_feature, "are listed more than once"),
        (lambda d: d.update(detection=[RULE]), "detection=['any-outside-tolerance']"),
        (lambda d: d.update(degenerate="false"), "degenerate='false' is not true"),
        (lambda d: d.update(plan="none"), "plan='none' is not an object"),
        (lambda d: d["embedding"].update(params=[1]), "params=[1] is not an object"),
        (lambda d: d.update(training="abc"), "training='abc' is not an object"),
        (
            lambda d: d["features"].append({"slope": 1}),
            "a features entry has no name, so the file is corrupt",
        ),
        (
            lambda d: d.update(model="linear"),
            "model must be an object with a name, so the file is corrupt",
        ),
        (
            lambda d: d["training"].update(fixed_requests="many"),
            "training.fixed_requests='many' is not a whole number",
        ),
        (
            lambda d: d["training"].update(requests=[10, "x"]),
            "training.requests=[10, 'x'] is not a list of request counts",
        ),
        (
            lambda d: d["training"].update(quiet_gap_s=-1),
            "training.quiet_gap_s=-1 is not a number of seconds of 0 or more",
        ),
        (
            lambda d: d["training"].update(trigger="tcp:http"),
            "training.trigger: invalid trigger 'tcp:http'",
        ),
        (
            lambda d: d["training"].update(observations={"count:worker": "many"}),
            "training.observations=",
        ),
    ],
    ids=[
        "negative-tolerance",
        "null-tolerance",
        "text-kept",
        "number-node-type",
        "repeated-feature",
        "list-detection",
        "text-degenerate",
        "text-plan",
        "list-params",
        "text-training",
        "nameless-feature",
        "text-model",
        "text-fixed-requests",
        "text-in-requests",
        "negative-quiet-gap",
        "invalid-trigger",
        "text-observations",
    ],
)
def test_hand_edited_model_file_rejected(tmp_path, edit, message):
    document = _trained().to_dict()
    edit(document)
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(document))

    with pytest.raises(ModelError) as error:
        load_model(path)
    assert str(error.value).startswith(f"{path}: ")
    assert message in str(error.value)
    assert RETRAIN in str(error.value)


@pytest.mark.parametrize(
    "key, value",
    [
        ("slope", 1e308),
        ("slope", -(2.0**53) - 2),
        ("intercept", -1e300),
        ("tolerance", 2.0**60),
    ],
)
def test_huge_coefficient_rejected(tmp_path, key, value):
    document = _trained().to_dict()
    _edit_kept(document, **{key: value})
    path = tmp_path / "huge.json"
    path.write_text(json.dumps(document))

    with pytest.raises(ModelError) as error:
        load_model(path)
    assert str(error.value).startswith(f"{path}: feature count:worker: {key}=")
    assert "exceeds 2**53 in magnitude" in str(error.value)
    assert RETRAIN in str(error.value)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_coefficient_rejected(tmp_path, literal):
    document = _trained().to_dict()
    _edit_kept(document, slope="SLOPE")
    path = tmp_path / "nan.json"
    path.write_text(json.dumps(document).replace('"SLOPE"', literal))

    with pytest.raises(ModelError) as error:
        load_model(path)
    assert "feature count:worker: slope=" in str(error.value)
    assert "is not a number" in str(error.value)


def test_coefficients_at_bound_accepted(tmp_path):
    document = _trained().to_dict()
    _edit_kept(document, slope=2.0**53, intercept=-(2.0**53), tolerance=2.0**53)
    path = tmp_path / "bound.json"
    path.write_text(json.dumps(document))

    model = load_model(path)
    expected = model.expected(2**32)["count:worker"]
    assert np.isfinite(expected)
    assert expected == 2.0**53 * 2**32 - 2.0**53


def test_zero_tolerance_is_valid(tmp_path):
    document = _trained().to_dict()
    _edit_kept(document, tolerance=0)
    path = tmp_path / "exact.json"
    path.write_text(json.dumps(document))

    kept = load_model(path).kept_features[0]
    assert kept.tolerance == 0.0


def test_missing_model_file(tmp_path):
    path = tmp_path / "none.json"
    with pytest.raises(ModelError) as error:
        load_model(path)
    assert str(error.value).startswith(f"{path}: model file not found")
    assert f"syslrn train TRACE... -o {path}" in str(error.value)


def test_degenerate_model_notes_other_request_counts():
    model = _trained(requests=np.full(5, 30.0))

    assert model.degenerate
    assert model.training["fixed_requests"] == 30
    assert model.detect({"count:worker": 60.0, "degree:worker": 60.0}, 30).notes == []
    assert "fixed workload of 30 requests" in model.detect({}, 40).notes[0]


def _phase_graph(rows):
    return build_graph(table_from_rows(rows))


def test_classes_from_phases():
    def snap(pid, comm):
        return dict(
            ts_ns=1, host="a", kind="snapshot", pid=pid, start_ns=pid, comm=comm
        )

    def forked(pid, name, parent):
        return [
            dict(
                ts_ns=5,
                host="a",
                kind="fork",
                pid=pid,
                start_ns=pid * 10,
                ppid=parent,
                parent_start_ns=parent,
                comm="x",
            ),
            dict(
                ts_ns=6,
                host="a",
                kind="exec",
                pid=pid,
                start_ns=pid * 10,
                comm="x",
                filename=f"/usr/bin/{name}",
            ),
        ]

    startup = _phase_graph(
        [snap(1, "systemd"), snap(2, "cron"), *forked(3, "postgres", 1)]
    )
    idle = _phase_graph(
        [snap(1, "systemd"), snap(3, "postgres"), *forked(4, "autovacuum", 3)]
    )
    workload = _phase_graph(
        [snap(1, "systemd"), snap(3, "postgres"), *forked(5, "backend", 3)]
    )
    classes = classify_node_types(
        {"startup": [startup], "idle": [idle], "workload": [workload]}, {"backend"}
    )

    assert classes == {
        "systemd": "system-background",
        "cron": "system-background",
        "postgres": "application-background",
        "autovacuum": "application-background",
        "backend": "workload-driven",
    }


def test_model_from_dict_rejects_unknown_rule():
    document = _trained().to_dict()
    document["detection"]["rule"] = "majority-vote"

    with pytest.raises(ModelError) as error:
        Model.from_dict(document)
    assert "detection rule 'majority-vote' is unknown" in str(error.value)
    assert f"set the rule to it or {RETRAIN}" in str(error.value)
