"""DeepLog: the next-key model, the choice of g, and campaign folds."""

from __future__ import annotations

import inspect
import json
import random

import pytest

from syslrn import cli
from syslrn.baselines.campaign import load_campaign
from syslrn.baselines.deeplog import (
    UNKNOWN_RANK,
    DeepLog,
    select_top_g,
    validation_split,
)
from syslrn.baselines.evaluation import (
    COMBINED,
    DeepLogConfig,
    evaluate_campaign,
    evaluate_sequences,
)
from syslrn.baselines.logparse import UNKNOWN_KEY
from syslrn.commands import baseline as baseline_command
from syslrn.errors import CampaignError, LogError
from syslrn.evaluate import folds as folds_module
from syslrn.evaluate.folds import make_folds

# A key language in which every state has exactly two successors, drawn
# with equal probability. A model that learned it ranks both legal
# successors 1 and 2, so at g=2 normal sessions pass and any other key is
# flagged. "^" is the start of a session; E ends it.
GRAMMAR = {
    "^": ("A", "C"),
    "A": ("B", "D"),
    "C": ("B", "D"),
    "B": ("E", "A"),
    "D": ("E", "C"),
}

# Small enough to train in about a second on one thread.
TINY = {
    "window": 4,
    "n_layers": 1,
    "hidden_size": 32,
    "epochs": 40,
    "batch_size": 32,
    "learning_rate": 0.02,
    "seed": 0,
    "n_threads": 1,
}


def sample_sessions(n: int, seed: int, max_length: int = 12) -> list[list[str]]:
    rng = random.Random(seed)
    sessions = []
    for _ in range(n):
        state, keys = "^", []
        while state != "E" and len(keys) < max_length:
            state = rng.choice(GRAMMAR[state])
            keys.append(state)
        sessions.append(keys)
    return sessions


@pytest.fixture(scope="module")
def grammar_model() -> DeepLog:
    return DeepLog(top_g=2, **TINY).fit(sample_sessions(300, seed=1))


def test_learns_grammar_normal_sessions_pass(grammar_model):
    normal = sample_sessions(200, seed=2)
    flagged = grammar_model.predict(normal)
    assert not flagged.any(), [s for s, f in zip(normal, flagged, strict=True) if f][:3]


def test_learns_grammar_legal_successors_rank_top_two(grammar_model):
    for ranks in grammar_model.key_ranks(sample_sessions(50, seed=3)):
        assert ranks.max() <= 2


def test_learns_grammar_violations_flagged(grammar_model):
    violations = {
        "illegal first key": ["B", "E"],
        "A then C": ["A", "C", "B", "E"],
        "B then D": ["A", "B", "D", "E"],
        "A then A": ["C", "B", "A", "A", "B", "E"],
        "late violation": ["A", "B", "A", "D", "C", "D", "C", "B", "A", "D", "D"],
    }
    for name, keys in violations.items():
        assert grammar_model.predict([keys])[0], name


def test_first_anomaly_position(grammar_model):
    positions = grammar_model.first_anomalies(
        [["A", "B", "D", "E"], ["A", "B", "E"], ["D"]]
    )
    assert positions == [2, None, 0]


def test_g_one_flags_two_way_choices(grammar_model):
    # Both successors are equally likely, so one of them is rank 2.
    flagged = grammar_model.predict(sample_sessions(50, seed=4), top_g=1)
    assert flagged.mean() > 0.5


def test_short_sessions_judged_on_their_keys(grammar_model):
    # Shorter than the window of 4: the padding is history, never a target.
    flagged = grammar_model.predict([["A"], ["C"], ["A", "B"], ["C", "D", "E"]])
    assert not flagged.any()


def test_unseen_key_is_anomaly_without_crash(grammar_model):
    ranks = grammar_model.key_ranks([["A", "Z", "B"], ["A", UNKNOWN_KEY]])
    assert ranks[0][1] == UNKNOWN_RANK
    assert ranks[1][1] == UNKNOWN_RANK
    flagged = grammar_model.predict([["A", "Z", "B"]], top_g=len(grammar_model.keys_))
    assert flagged[0]


def test_unknown_key_never_learned():
    model = DeepLog(top_g=1, **{**TINY, "epochs": 2}).fit([["A", UNKNOWN_KEY, "B"]])
    assert model.keys_ == ["A", "B"]
    assert model.predict([["A", UNKNOWN_KEY]])[0]


def test_repeated_windows_counted_once():
    model = DeepLog(**{**TINY, "epochs": 1}).fit([["A", "B"]] * 5)
    assert model.n_windows_ == 10
    assert model.n_distinct_windows_ == 2


def test_empty_training_set_raises():
    with pytest.raises(LogError, match="empty training set"):
        DeepLog().fit([])
    with pytest.raises(LogError, match="empty training set"):
        DeepLog().fit([[UNKNOWN_KEY]])


def test_invalid_parameter_raises():
    with pytest.raises(ValueError, match="window=0"):
        DeepLog(window=0).fit([["A"]])


def test_same_seed_same_ranks():
    sessions = sample_sessions(40, seed=5)
    first = DeepLog(**{**TINY, "epochs": 5}).fit(sessions)
    second = DeepLog(**{**TINY, "epochs": 5}).fit(sessions)
    assert first.loss_ == second.loss_


def test_select_top_g_smallest_clean_g():
    assert select_top_g([1, 2, 3, 1], n_keys=10) == 3
    assert select_top_g([1, 2, 3, 1], n_keys=10, max_false_alarm=0.25) == 2
    assert select_top_g([1, 1], n_keys=10) == 1


def test_select_top_g_unknown_keys_set_the_floor():
    # One of four units has an unseen key: flagged at every g. The g chosen
    # must flag nothing else.
    assert select_top_g([UNKNOWN_RANK, 4, 2, 1], n_keys=6) == 4


def test_select_top_g_requires_units():
    with pytest.raises(ValueError):
        select_top_g([], n_keys=3)


def test_validation_split_disjoint_and_seeded():
    fit, held_out = validation_split(10, 0.2, seed=3)
    assert len(held_out) == 2
    assert sorted(fit + held_out) == list(range(10))
    assert validation_split(10, 0.2, seed=3) == (fit, held_out)
    assert validation_split(2, 0.01, seed=0)[1] != []


def test_validation_split_needs_two_units():
    with pytest.raises(LogError, match="at least 2"):
        validation_split(1, 0.2, seed=0)


def test_evaluate_sequences_auto_g():
    config = DeepLogConfig(top_g=None, model_params=TINY)
    abnormal = [["A", "C", "E"], ["B"], ["A", "B", "A", "A"]]
    result = evaluate_sequences(
        sample_sessions(200, 6), sample_sessions(100, 7), abnormal, config
    )
    assert result.top_g == 2
    assert result.scores.recall == 1.0
    assert result.scores.selectivity == 1.0
    assert result.test_sessions == 103


def test_evaluate_sequences_empty_training_set():
    with pytest.raises(LogError, match="empty training set"):
        evaluate_sequences([], [["A"]], [["B"]])


# Campaigns -----------------------------------------------------------------

APP_REGEX = r"\breq=(\d+)"
DB_REGEX = r"\bconn=(\d+)"


def _app_log(experiment: int, fault: str) -> str:
    lines = []
    for request in range(6):
        rid = experiment * 100 + request
        ts = f"2024-05-01 10:{experiment:02d}:{request:02d}.{request * 37:03d}"
        lines.append(
            f"{ts} app[{4000 + experiment}]: req={rid} accepted from 127.0.0.1:{40000 + rid}"
        )
        if fault == "disk_full" and request == 3:
            lines.append(
                f"{ts} app[{4000 + experiment}]: req={rid} write failed: No space left on device"
            )
        else:
            lines.append(
                f"{ts} app[{4000 + experiment}]: req={rid} query took {request * 3 + 1} ms"
            )
        lines.append(f"{ts} app[{4000 + experiment}]: req={rid} done status=200")
        lines.append(f"{ts} app[{4000 + experiment}]: heartbeat")
    return "\n".join(lines) + "\n"


def _db_log(experiment: int, fault: str) -> str:
    lines = []
    for connection in range(4):
        cid = experiment * 10 + connection
        lines.append(f"db[{900 + cid}]: conn={cid} open user=app")
        lines.append(f"db[{900 + cid}]: conn={cid} exec statement 1")
        if fault == "db_crash" and connection == 2:
            lines.append(f"db[{900 + cid}]: conn={cid} terminated by signal 11")
            continue
        lines.append(f"db[{900 + cid}]: conn={cid} close")
    return "\n".join(lines) + "\n"


# (id, phase, fault, failure). Rows are out of id order on purpose: folds
# must follow the order of the ids, not of the index file.
EXPERIMENTS = [
    ("e07", "workload", "none", False),
    ("e01", "workload", "none", False),
    ("e00", "warmup", "none", False),
    ("e03", "workload", "disk_full", True),
    ("e02", "workload", "none", False),
    ("e05", "workload", "db_crash", True),
    ("e04", "workload", "none", False),
    ("e06", "workload", "none", False),
    ("e08", "workload", "slow_disk", False),
    ("e09", "workload", "disk_full", True),
    ("e10", "workload", "db_crash", True),
    ("e11", "workload", "none", False),
]


def build_campaign(
    root, experiments=EXPERIMENTS, app_log=_app_log, db_log=_db_log, sources=None
):
    root.mkdir(parents=True, exist_ok=True)
    if sources is None:
        sources = [
            {"component": "app", "file": "logs/app.log", "session_regex": APP_REGEX},
            {
                "component": "db",
                "file": "logs/db.log",
                "session_regex": DB_REGEX,
                "masks": [{"regex_pattern": r"(?<=user=)\w+", "mask_with": "USER"}],
            },
        ]
    (root / "campaign.json").write_text(
        json.dumps({"scenario": "toy", "log_sources": sources})
    )
    rows = ["id,phase,requests,fault,failure,trace"]
    for experiment_id, phase, fault, failure in experiments:
        number = int(experiment_id[1:])
        rows.append(
            f"{experiment_id},{phase},6,{fault},{str(failure).lower()},trace.parquet"
        )
        logs = root / experiment_id / "logs"
        logs.mkdir(parents=True)
        (logs / "app.log").write_text(app_log(number, fault))
        (logs / "db.log").write_text(db_log(number, fault))
        (root / experiment_id / "labels.json").write_text(json.dumps({"fault": fault}))
    (root / "index.csv").write_text("\n".join(rows) + "\n")
    return root


CAMPAIGN_CONFIG = DeepLogConfig(top_g=1, model_params={**TINY, "epochs": 30})


@pytest.fixture(scope="module")
def campaign_result(tmp_path_factory):
    root = build_campaign(tmp_path_factory.mktemp("campaign") / "toy")
    return evaluate_campaign(root, n_folds=3, config=CAMPAIGN_CONFIG)


def test_campaign_folds_match_make_folds(campaign_result):
    workload = sorted(
        (e for e in EXPERIMENTS if e[1] == "workload"), key=lambda e: e[0]
    )
    ids = [e[0] for e in workload]
    expected = make_folds([e[3] for e in workload], n_folds=3, seed=0)

    assert [e.id for e in campaign_result.experiments] == ids
    assert len(campaign_result.folds) == len(expected)
    for fold, reference in zip(campaign_result.folds, expected, strict=True):
        assert fold.train == tuple(ids[i] for i in reference.train)
        assert fold.test == tuple(ids[i] for i in reference.test)
        for configuration in ("app", "db", COMBINED):
            assert set(fold.verdicts[configuration]) == set(fold.test)


def test_campaign_never_uses_other_phases(campaign_result):
    for fold in campaign_result.folds:
        assert "e00" not in fold.train + fold.test


def test_campaign_single_configurations(campaign_result):
    app = campaign_result.fault_scores("app")
    db = campaign_result.fault_scores("db")
    assert app["disk_full"].recall == 1.0
    assert app["db_crash"].recall == 0.0
    assert db["db_crash"].recall == 1.0
    assert db["disk_full"].recall == 0.0
    for name in ("app", "db"):
        assert campaign_result.scores(name).selectivity == 1.0
    # A fault that caused no failure counts among the failure-free runs.
    assert app["slow_disk"].normals == 1
    assert app["slow_disk"].failures == 0


def test_campaign_combined_configuration(campaign_result):
    scores = campaign_result.scores(COMBINED)
    assert scores.recall == 1.0
    assert scores.selectivity == 1.0
    assert scores.precision == 1.0
    # Every fold tests all four failures, and the seven failure-free runs
    # are tested once each.
    assert scores.failures == 4 * 3
    assert scores.normals == 7


def test_campaign_evidence_names_the_key(campaign_result):
    evidence = campaign_result.folds[0].evidence["app"]["e03"]
    assert evidence["session"] == "303"
    assert evidence["key"] == UNKNOWN_KEY
    assert evidence["position"] == 1


def test_campaign_one_component(tmp_path):
    root = build_campaign(tmp_path / "toy")
    result = evaluate_campaign(root, ["db"], n_folds=3, config=CAMPAIGN_CONFIG)
    assert result.components == ["db"]
    assert result.scores(COMBINED).to_dict() == result.scores("db").to_dict()


def test_campaign_unknown_component(tmp_path):
    root = build_campaign(tmp_path / "toy")
    with pytest.raises(CampaignError, match="no log source for component 'web'"):
        evaluate_campaign(root, ["web"], n_folds=3, config=CAMPAIGN_CONFIG)


def test_campaign_regex_matching_nothing(tmp_path):
    sources = [
        {"component": "app", "file": "logs/app.log", "session_regex": r"\bqid=(\w+)"}
    ]
    root = build_campaign(tmp_path / "toy", sources=sources)
    with pytest.raises(LogError) as caught:
        evaluate_campaign(root, n_folds=3, config=CAMPAIGN_CONFIG)
    assert "'app'" in str(caught.value)
    assert r"\bqid=(\w+)" in str(caught.value)


def test_campaign_empty_training_set(tmp_path):
    # Only failure runs have db sessions: every fold's training set is empty.
    def db_log(experiment, fault):
        failure = fault in ("disk_full", "db_crash")
        return f"db: conn={experiment} terminated\n" if failure else "db: idle\n"

    root = build_campaign(tmp_path / "toy", db_log=db_log)
    with pytest.raises(LogError, match="'db': empty training set in fold 0"):
        evaluate_campaign(root, n_folds=3, config=CAMPAIGN_CONFIG)


def test_campaign_missing_log_file_is_empty(tmp_path):
    root = build_campaign(tmp_path / "toy")
    (root / "e05" / "logs" / "db.log").unlink()
    result = evaluate_campaign(root, ["db"], n_folds=3, config=CAMPAIGN_CONFIG)
    # Without its log, the crash leaves nothing for DeepLog to see.
    assert result.fault_scores("db")["db_crash"].recall == 0.5


def test_campaign_auto_g(tmp_path):
    root = build_campaign(tmp_path / "toy")
    config = DeepLogConfig(top_g=None, model_params={**TINY, "epochs": 30})
    result = evaluate_campaign(root, n_folds=3, config=config)
    for fold in result.folds:
        assert fold.top_g == {"app": 1, "db": 1}
    assert result.scores(COMBINED).recall == 1.0


def test_campaign_too_few_failure_free_runs(tmp_path):
    root = build_campaign(tmp_path / "toy")
    with pytest.raises(CampaignError, match="only 7 failure-free"):
        evaluate_campaign(root, n_folds=9, config=CAMPAIGN_CONFIG)


def test_campaign_index_missing_column(tmp_path):
    root = build_campaign(tmp_path / "toy")
    (root / "index.csv").write_text("id,phase,fault\ne01,workload,none\n")
    with pytest.raises(CampaignError, match="missing column"):
        load_campaign(root)


def test_campaign_invalid_failure_value(tmp_path):
    root = build_campaign(tmp_path / "toy")
    text = (
        (root / "index.csv").read_text().replace("disk_full,true", "disk_full,maybe", 1)
    )
    (root / "index.csv").write_text(text)
    with pytest.raises(CampaignError, match="failure='maybe' is invalid"):
        load_campaign(root)


def test_campaign_missing_campaign_file(tmp_path):
    root = build_campaign(tmp_path / "toy")
    (root / "campaign.json").unlink()
    with pytest.raises(CampaignError, match="campaign.json"):
        load_campaign(root)


def test_campaign_source_without_regex(tmp_path):
    sources = [{"component": "app", "file": "logs/app.log"}]
    root = build_campaign(tmp_path / "toy", sources=sources)
    with pytest.raises(CampaignError, match="missing session_regex"):
        load_campaign(root)


# Command line ---------------------------------------------------------------

TINY_ARGS = [
    "--window",
    "4",
    "--layers",
    "1",
    "--hidden",
    "32",
    "--epochs",
    "30",
    "--batch-size",
    "32",
    "--learning-rate",
    "0.02",
]


def test_cli_campaign_json(tmp_path, capsys):
    root = build_campaign(tmp_path / "toy")
    status = cli.main(
        [
            "baseline",
            "deeplog",
            "campaign",
            str(root),
            "--folds",
            "3",
            "--combined",
            "--top-g",
            "1",
            "--json",
            *TINY_ARGS,
        ]
    )
    assert status == 0
    document = json.loads(capsys.readouterr().out)
    assert document["reported"] == ["app", "db", COMBINED]
    assert document["scores"][COMBINED]["recall"] == 1.0
    assert len(document["folds"]) == 3
    assert document["fault_scores"]["app"]["db_crash"]["recall"] == 0.0


def test_cli_campaign_table(tmp_path, capsys):
    root = build_campaign(tmp_path / "toy")
    status = cli.main(
        [
            "baseline",
            "deeplog",
            "campaign",
            str(root),
            "--folds",
            "3",
            "--components",
            "app",
            "--top-g",
            "1",
            *TINY_ARGS,
        ]
    )
    assert status == 0
    out = capsys.readouterr().out
    assert "recall" in out
    assert "disk_full" in out
    assert COMBINED not in out


def test_cli_sequences(tmp_path, capsys):
    def write(name, sessions):
        path = tmp_path / name
        path.write_text(
            "".join(f"s{i},{' '.join(keys)}\n" for i, keys in enumerate(sessions))
        )
        return str(path)

    status = cli.main(
        [
            "baseline",
            "deeplog",
            "sequences",
            "--train",
            write("train", sample_sessions(200, 8)),
            "--test-normal",
            write("normal", sample_sessions(50, 9)),
            "--test-abnormal",
            write("abnormal", [["B"], ["A", "Q", "E"]]),
            "--top-g",
            "2",
            "--json",
            *TINY_ARGS,
        ]
    )
    assert status == 0
    document = json.loads(capsys.readouterr().out)
    assert document["scores"]["recall"] == 1.0
    assert document["scores"]["selectivity"] == 1.0
    assert document["test_sessions"] == 52


def test_cli_bad_regex_one_line_error(tmp_path, capsys):
    sources = [
        {"component": "app", "file": "logs/app.log", "session_regex": r"\bqid=(\w+)"}
    ]
    root = build_campaign(tmp_path / "toy", sources=sources)
    status = cli.main(["baseline", "deeplog", "campaign", str(root), "--folds", "3"])
    assert status == 2
    err = capsys.readouterr().err
    assert err.startswith("syslrn: error: component 'app'")
    assert len(err.strip().splitlines()) == 1


def test_cli_defaults_match_library():
    model = inspect.signature(DeepLog).parameters
    assert model["window"].default == baseline_command.DEFAULT_WINDOW
    assert model["top_g"].default == baseline_command.DEFAULT_TOP_G
    assert model["n_layers"].default == baseline_command.DEFAULT_LAYERS
    assert model["hidden_size"].default == baseline_command.DEFAULT_HIDDEN
    assert model["epochs"].default == baseline_command.DEFAULT_EPOCHS
    assert model["batch_size"].default == baseline_command.DEFAULT_BATCH_SIZE
    assert model["learning_rate"].default == baseline_command.DEFAULT_LEARNING_RATE
    assert baseline_command.DEFAULT_FOLDS == folds_module.DEFAULT_FOLDS
    assert baseline_command.DEFAULT_FOLD_SEED == folds_module.DEFAULT_SEED
    assert baseline_command.COMBINED == COMBINED


def test_cli_without_torch_install_hint(tmp_path, monkeypatch, capsys):
    # PyTorch is installed here, so its absence is simulated: a None entry in
    # sys.modules makes "import torch" raise ModuleNotFoundError.
    import sys

    import syslrn.baselines

    monkeypatch.setitem(sys.modules, "torch", None)
    for name in ("evaluation", "deeplog"):
        monkeypatch.delitem(sys.modules, f"syslrn.baselines.{name}")
        monkeypatch.delattr(syslrn.baselines, name)
    root = build_campaign(tmp_path / "toy")
    status = cli.main(["baseline", "deeplog", "campaign", str(root), "--folds", "3"])
    assert status == 2
    assert "pip install 'syslrn[deeplog]'" in capsys.readouterr().err
