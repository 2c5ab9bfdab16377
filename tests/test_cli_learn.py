"""The learning commands end to end: merge, train, detect, evaluate, report."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from learn_workloads import (
    HOST,
    shell_workload_rows,
    write_shell_campaign,
    write_shell_run,
)
from syslrn.cli import main
from syslrn.model import load_model
from syslrn.trace import read_trace, table_from_rows, write_trace

CHILDREN = 2


@dataclass
class ShellRuns:
    """Runs of the shell workload: training runs, and two runs to judge."""

    training: list[Path]
    normal: Path
    missing_child: Path


# NOTE: these runs are hand-built traces of the shell workload. A fixture
# that records the same workload with `syslrn record` can join the params
# below, because the tests rely only on the ShellRuns it returns.
@pytest.fixture(params=["hand-built"])
def shell_runs(request, tmp_path) -> ShellRuns:
    training = write_shell_campaign(tmp_path / "train", children=CHILDREN)
    normal = write_shell_run(tmp_path / "normal.parquet", 10, CHILDREN, seed=101)
    missing = write_shell_run(
        tmp_path / "missing.parquet", 10, CHILDREN, seed=102, missing=1
    )
    return ShellRuns(training, normal, missing)


def _train(runs, model, *extra):
    return main(["train", *map(str, runs), "-o", str(model), *extra])


def test_train_keeps_workload_features(shell_runs, tmp_path, capsys):
    model_path = tmp_path / "model.json"

    assert _train(shell_runs.training, model_path) == 0
    model = load_model(model_path)
    kept = {f.name: f for f in model.kept_features}
    assert set(kept) >= {"count:worker", "degree:worker"}
    for name in ("count:worker", "degree:worker"):
        assert kept[name].r2 > 0.99
        assert kept[name].slope == pytest.approx(CHILDREN, rel=0.01)
    rejected = {f.name for f in model.features if not f.kept}
    assert {"count:backup", "degree:backup", "count:cron", "count:init"} <= rejected

    out = capsys.readouterr().out
    assert "count:worker" in out
    assert "rejected" in out
    assert f"model written to {model_path}" in out


def test_detect_flags_missing_child(shell_runs, tmp_path, capsys):
    model_path = tmp_path / "model.json"
    _train(shell_runs.training, model_path)
    capsys.readouterr()

    assert main(["detect", str(model_path), str(shell_runs.normal)]) == 0
    assert "normal" in capsys.readouterr().out
    assert main(["detect", str(model_path), str(shell_runs.missing_child)]) == 1
    out = capsys.readouterr().out
    assert "ANOMALOUS" in out
    assert "count:worker" in out


def test_learning_output_singular_counts(shell_runs, tmp_path, capsys):
    failure = write_shell_run(
        tmp_path / "fail.parquet", 8, CHILDREN, missing=1, labels={"fault": "oom"}
    )
    model_path = tmp_path / "model.json"

    assert _train([*shell_runs.training, failure], model_path) == 0
    assert "leaving out 1 failure run: " in capsys.readouterr().out

    one = write_shell_run(tmp_path / "one.parquet", 1, CHILDREN)
    main(["detect", str(model_path), str(one)])
    assert f"{one}: normal (1 request, 0 of " in capsys.readouterr().out


def test_detect_json(shell_runs, tmp_path, capsys):
    model_path = tmp_path / "model.json"
    _train(shell_runs.training, model_path)
    capsys.readouterr()

    status = main(
        [
            "detect",
            str(model_path),
            str(shell_runs.normal),
            str(shell_runs.missing_child),
            "--json",
        ]
    )
    document = json.loads(capsys.readouterr().out)

    assert status == 1
    verdicts = {Path(r["run"]).name: r for r in document["runs"]}
    assert not verdicts["normal.parquet"]["anomalous"]
    missing = verdicts["missing.parquet"]
    assert missing["anomalous"]
    worker = next(d for d in missing["deviating"] if d["feature"] == "count:worker")
    assert worker["observed"] == 10.0
    assert worker["expected"] == pytest.approx(20.0)
    assert worker["deviation"] == pytest.approx(-10.0)
    assert worker["tolerance"] >= 1.0


def test_report_writes_pictures(shell_runs, tmp_path, capsys):
    model_path = tmp_path / "model.json"
    _train(shell_runs.training, model_path)
    out_dir = tmp_path / "report"

    status = main(
        [
            "report",
            str(model_path),
            str(shell_runs.normal),
            str(shell_runs.missing_child),
            "-o",
            str(out_dir),
        ]
    )

    assert status == 0
    pictures = sorted(p.name for p in out_dir.glob("*.png"))
    assert "graph.png" in pictures
    assert "r2.png" in pictures
    assert any(p.startswith("feature-") and "count_worker" in p for p in pictures)
    assert all((out_dir / p).stat().st_size > 1000 for p in pictures)
    assert "index.html" in capsys.readouterr().out


def _report(model_path, runs, out_dir, *extra):
    return main(
        ["report", str(model_path), *map(str, runs), "-o", str(out_dir), *extra]
    )


@pytest.mark.parametrize("first", ["normal", "missing_child"])
def test_report_draws_first_given_run(shell_runs, tmp_path, capsys, first):
    model_path = tmp_path / "model.json"
    _train(shell_runs.training, model_path)
    capsys.readouterr()
    second = "missing_child" if first == "normal" else "normal"
    runs = [getattr(shell_runs, first), getattr(shell_runs, second)]

    assert _report(model_path, runs, tmp_path / "report") == 0

    html = (tmp_path / "report" / "index.html").read_text()
    assert f"System graph of {runs[0]}</h2>" in html
    assert f"system graph of {runs[0]})" in capsys.readouterr().out


def test_report_graph_run_names_campaign_run(shell_runs, tmp_path, capsys):
    directory = _campaign(tmp_path, shell_runs)
    model_path = tmp_path / "model.json"
    _train(shell_runs.training, model_path)
    capsys.readouterr()

    assert _report(model_path, [directory], tmp_path / "default") == 0
    assert (
        "System graph of fail-0</h2>" in (tmp_path / "default/index.html").read_text()
    )

    assert (
        _report(model_path, [directory], tmp_path / "startup", "--graph-run", "start")
        == 0
    )
    assert "System graph of start</h2>" in (tmp_path / "startup/index.html").read_text()

    trace = directory / "fail-1.parquet"
    assert (
        _report(model_path, [directory], tmp_path / "path", "--graph-run", str(trace))
        == 0
    )
    assert "System graph of fail-1</h2>" in (tmp_path / "path/index.html").read_text()


def test_report_rejects_unknown_graph_run(shell_runs, tmp_path, capsys):
    model_path = tmp_path / "model.json"
    _train(shell_runs.training, model_path)
    capsys.readouterr()

    status = _report(
        model_path, [shell_runs.normal], tmp_path / "report", "--graph-run", "other"
    )

    assert status == 2
    err = capsys.readouterr().err
    assert "--graph-run other: no such run among the inputs" in err
    assert str(shell_runs.normal) in err


def test_report_rejects_missing_parent(shell_runs, tmp_path, capsys):
    model_path = tmp_path / "model.json"
    _train(shell_runs.training, model_path)
    capsys.readouterr()
    out_dir = tmp_path / "no-such-dir" / "report"

    assert _report(model_path, [shell_runs.normal], out_dir) == 2
    assert (
        f"output {out_dir}: directory {out_dir.parent} does not exist; create it first"
        in capsys.readouterr().err
    )
    assert not out_dir.parent.exists()


def test_report_rejects_file_output(shell_runs, tmp_path, capsys):
    model_path = tmp_path / "model.json"
    _train(shell_runs.training, model_path)
    capsys.readouterr()
    out_file = tmp_path / "report.html"
    out_file.write_text("keep")

    assert _report(model_path, [shell_runs.normal], out_file) == 2
    assert "exists and is not a directory" in capsys.readouterr().err
    assert out_file.read_text() == "keep"


def test_model_training_facts(shell_runs, tmp_path):
    model_path = tmp_path / "model.json"
    _train(shell_runs.training, model_path)
    document = json.loads(model_path.read_text())
    training = document["training"]

    assert document["plan"] is None
    assert training["runs"] == len(shell_runs.training)
    assert sorted(set(training["requests"])) == [4, 8, 12, 16, 20]
    assert len(training["durations_s"]) == len(shell_runs.training)
    assert training["quiet_gap_s"] == pytest.approx(0.007)
    assert training["driver_excluded"] is False
    assert training["classes"]["worker"] == "workload-driven"
    assert training["classes"]["init"] == "system-background"


def _prefix_warnings(records):
    return [
        r.getMessage()
        for r in records
        if r.levelno == logging.WARNING and "-byte prefix" in r.getMessage()
    ]


def test_train_warns_of_shared_comm_prefix(tmp_path, caplog):
    # Each request forks one postgres-worker-a and one postgres-worker-b.
    # Both names are 17 bytes and share the 15 bytes that comm keeps.
    names = ("postgres-worker-a", "postgres-worker-b")
    paths = []
    for i, requests in enumerate((4, 8, 12, 16)):
        rows = shell_workload_rows(requests, 2)
        execs = [r for r in rows if r.get("filename") == "/usr/bin/worker"]
        for j, row in enumerate(execs):
            row["filename"] = f"/usr/bin/{names[j % 2]}"
        meta = {"host": HOST, "requests": requests}
        path = tmp_path / f"r{i}.parquet"
        paths.append(write_trace(path, table_from_rows(rows), meta))

    with caplog.at_level(logging.WARNING, logger="syslrn"):
        assert _train(paths, tmp_path / "m.json") == 0

    kept = {f.node_type for f in load_model(tmp_path / "m.json").kept_features}
    assert set(names) <= kept
    warnings = _prefix_warnings(caplog.records)
    assert len(warnings) == 1
    assert "'postgres-worker-a' and 'postgres-worker-b'" in warnings[0]
    assert "15-byte prefix 'postgres-worker'" in warnings[0]


def test_train_distinct_comms_no_warning(shell_runs, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="syslrn"):
        assert _train(shell_runs.training, tmp_path / "m.json") == 0

    assert _prefix_warnings(caplog.records) == []


def test_train_without_kept_feature_writes_nothing(tmp_path, capsys):
    # Every run forks no worker at all, and the rest does not follow requests.
    runs = [
        write_shell_run(tmp_path / f"r{i}.parquet", r, 0, seed=i)
        for i, r in enumerate((3, 6, 9, 12))
    ]
    model_path = tmp_path / "model.json"

    assert _train(runs, model_path) == 1
    assert not model_path.exists()
    assert "no feature was kept" in capsys.readouterr().err


def test_train_fixed_workload_says_so(tmp_path, capsys):
    runs = [
        write_shell_run(tmp_path / f"r{i}.parquet", 8, CHILDREN, seed=i)
        for i in range(4)
    ]
    model_path = tmp_path / "model.json"

    assert _train(runs, model_path) == 0
    out = capsys.readouterr().out
    assert "fixed workload" in out
    model = load_model(model_path)
    assert model.degenerate
    kept = {f.name for f in model.kept_features}
    assert {"count:worker", "degree:worker", "count:init"} <= kept
    assert "count:backup" not in kept

    missing = write_shell_run(tmp_path / "missing.parquet", 8, CHILDREN, missing=1)
    assert main(["detect", str(model_path), str(missing)]) == 1
    assert main(["detect", str(model_path), str(runs[0])]) == 0


def test_train_rejects_corrupt_trace(shell_runs, tmp_path, capsys):
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(shell_runs.normal.read_bytes()[:300])

    assert _train([*shell_runs.training, broken], tmp_path / "m.json") == 2
    err = capsys.readouterr().err
    assert "broken.parquet" in err
    assert "truncated or corrupt" in err


def test_train_rejects_runs_without_requests(tmp_path, capsys):
    paths = []
    for i in range(3):
        path = write_shell_run(tmp_path / f"r{i}.parquet", 4 + i, 1, seed=i)
        trace = read_trace(path)
        meta = dict(trace.meta)
        meta.pop("requests")
        if i == 2:
            meta["requests"] = 6
        paths.append(write_trace(path, trace.table, meta))

    assert _train(paths, tmp_path / "m.json") == 2
    err = capsys.readouterr().err
    assert "runs without a request count" in err
    assert "r0.parquet" in err
    assert "r1.parquet" in err
    assert "r2.parquet" not in err


def test_detect_rejects_other_schema_version(shell_runs, tmp_path, capsys):
    model_path = tmp_path / "model.json"
    _train(shell_runs.training, model_path)
    document = json.loads(model_path.read_text())
    document["schema_version"] = 2
    model_path.write_text(json.dumps(document))

    assert main(["detect", str(model_path), str(shell_runs.normal)]) == 2
    assert (
        "model schema version 2, this syslrn reads version 1" in capsys.readouterr().err
    )


def _campaign(tmp_path, shell_runs):
    directory = tmp_path / "campaign"
    directory.mkdir()
    lines = ["id,phase,requests,fault,failure,trace"]
    for path in shell_runs.training:
        target = directory / path.name
        target.write_bytes(path.read_bytes())
        lines.append(f"{path.stem},workload,,none,false,{path.name}")
    for i in range(2):
        name = f"fail-{i}.parquet"
        write_shell_run(directory / name, 6 + 4 * i, CHILDREN, seed=200 + i, missing=1)
        lines.append(f"fail-{i},workload,,drop-child,true,{name}")
    write_shell_run(directory / "start.parquet", 0, CHILDREN, seed=300)
    lines.append("start,startup,0,none,false,start.parquet")
    (directory / "index.csv").write_text("\n".join(lines) + "\n")
    return directory


def test_evaluate_campaign_json(shell_runs, tmp_path, capsys):
    directory = _campaign(tmp_path, shell_runs)

    status = main(
        [
            "evaluate",
            str(directory),
            "-k",
            "5",
            "--json",
            "--embedding",
            "bag-of-nodes,wl",
            "--model",
            "linear,huber",
        ]
    )
    document = json.loads(capsys.readouterr().out)

    assert status == 0
    assert document["experiments"] == len(shell_runs.training) + 2
    assert document["failure"] == 2
    assert document["folds"] == 5
    combos = [(r["embedding"], r["model"]) for r in document["results"]]
    assert combos == [
        ("bag-of-nodes", "linear"),
        ("bag-of-nodes", "huber"),
        ("wl", "linear"),
        ("wl", "huber"),
    ]
    for result in document["results"]:
        assert result["recall"] == 1.0
        assert result["selectivity"] == 1.0
        assert result["per_fault"]["drop-child"]["runs"] == 2
        assert len(result["per_fold"]) == 5


def test_evaluate_table_output(shell_runs, tmp_path, capsys):
    directory = _campaign(tmp_path, shell_runs)

    assert main(["evaluate", str(directory), "-k", "3"]) == 0
    out = capsys.readouterr().out
    assert "recall" in out
    assert "selectivity" in out
    assert "drop-child" in out


def test_evaluate_labelled_runs(shell_runs, tmp_path, capsys):
    failure = write_shell_run(
        tmp_path / "oom.parquet",
        12,
        CHILDREN,
        seed=7,
        missing=1,
        labels={"fault": "oom"},
    )

    status = main(
        ["evaluate", *map(str, shell_runs.training), str(failure), "-k", "3", "--json"]
    )
    result = json.loads(capsys.readouterr().out)["results"][0]

    assert status == 0
    assert result["per_fault"] == {"oom": {"runs": 1, "recall": 1.0}}


def test_evaluate_too_many_folds(shell_runs, capsys):
    assert main(["evaluate", *map(str, shell_runs.training), "-k", "40"]) == 2
    assert "n_folds=40" in capsys.readouterr().err


def _feature_table(tmp_path, suffix):
    columns = {"run": [], "n": [], "outcome": [], "count:worker": [], "count:cron": []}
    for i, r in enumerate((5, 10, 15, 20, 25, 30, 35, 40, 10, 20)):
        failed = i >= 8
        columns["run"].append(f"r{i}")
        columns["n"].append(r)
        columns["outcome"].append("crash" if failed else "ok")
        columns["count:worker"].append(r if failed else 2 * r)
        columns["count:cron"].append(i % 3)
    path = tmp_path / f"features{suffix}"
    if suffix == ".parquet":
        pq.write_table(pa.table(columns), path)
    else:
        sep = "\t" if suffix == ".tsv" else ","
        rows = [
            sep.join(map(str, values)) for values in zip(*columns.values(), strict=True)
        ]
        path.write_text("\n".join([sep.join(columns), *rows]) + "\n")
    return path


TABLE_OPTIONS = [
    "--request-column",
    "n",
    "--label-column",
    "outcome",
    "--normal-label",
    "ok",
    "--id-column",
    "run",
]


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet"])
def test_feature_table_train_detect_evaluate(tmp_path, capsys, suffix):
    table = _feature_table(tmp_path, suffix)
    model_path = tmp_path / "model.json"

    assert main(["train", str(table), "-o", str(model_path), *TABLE_OPTIONS]) == 0
    model = load_model(model_path)
    assert [f.name for f in model.kept_features] == ["count:worker"]
    assert model.embedding["name"] == "feature-table"
    assert "leaving out 2 failure runs" in capsys.readouterr().out

    assert main(["detect", str(model_path), str(table), "--json", *TABLE_OPTIONS]) == 1
    verdicts = {
        r["run"]: r["anomalous"] for r in json.loads(capsys.readouterr().out)["runs"]
    }
    assert verdicts == {f"r{i}": i >= 8 for i in range(10)}

    assert main(["evaluate", str(table), "-k", "4", "--json", *TABLE_OPTIONS]) == 0
    result = json.loads(capsys.readouterr().out)["results"][0]
    assert result["embedding"] == "feature-table"
    assert result["recall"] == 1.0
    assert result["per_fault"] == {"crash": {"runs": 2, "recall": 1.0}}


def test_report_table_has_no_graph_run(tmp_path, capsys):
    table = _feature_table(tmp_path, ".csv")
    model_path = tmp_path / "model.json"
    main(["train", str(table), "-o", str(model_path), *TABLE_OPTIONS])
    capsys.readouterr()
    out_dir = tmp_path / "report"

    assert _report(model_path, [table], out_dir, *TABLE_OPTIONS) == 0
    assert not (out_dir / "graph.png").exists()
    status = _report(model_path, [table], out_dir, "--graph-run", "r0", *TABLE_OPTIONS)
    assert status == 2
    assert "a feature table has no system graphs" in capsys.readouterr().err


def test_table_model_rejects_traces(tmp_path, shell_runs, capsys):
    table = _feature_table(tmp_path, ".csv")
    model_path = tmp_path / "model.json"
    main(["train", str(table), "-o", str(model_path), *TABLE_OPTIONS])
    capsys.readouterr()

    assert main(["detect", str(model_path), str(shell_runs.normal)]) == 2
    assert "trained on a feature table" in capsys.readouterr().err


def test_merge_command_joins_hosts(tmp_path, capsys):
    web = write_trace(
        tmp_path / "web.parquet",
        table_from_rows(
            [
                dict(
                    ts_ns=1,
                    host="web",
                    kind="snapshot",
                    pid=5,
                    start_ns=50,
                    comm="gunicorn",
                ),
                dict(
                    ts_ns=2,
                    host="web",
                    kind="connect",
                    pid=5,
                    start_ns=50,
                    family="inet",
                    laddr="10.0.0.1",
                    lport=40000,
                    raddr="10.0.0.2",
                    rport=5432,
                    netns=1,
                ),
            ]
        ),
        {"host": "web", "requests": 4, "labels": {"phase": "workload"}},
    )
    db = write_trace(
        tmp_path / "db.parquet",
        table_from_rows(
            [
                dict(
                    ts_ns=1,
                    host="db",
                    kind="snapshot",
                    pid=5,
                    start_ns=50,
                    comm="postgres",
                ),
                dict(
                    ts_ns=3,
                    host="db",
                    kind="accept",
                    pid=5,
                    start_ns=50,
                    family="inet",
                    laddr="10.0.0.2",
                    lport=5432,
                    raddr="10.0.0.1",
                    rport=40000,
                    netns=2,
                ),
            ]
        ),
        {"host": "db", "labels": {"phase": "workload"}},
    )
    merged = tmp_path / "run.parquet"

    assert main(["merge", str(web), str(db), "-o", str(merged)]) == 0
    assert "hosts db, web" in capsys.readouterr().out
    trace = read_trace(merged)
    assert trace.table.num_rows == 4
    assert trace.requests == 4
    assert merged.stat().st_mode & 0o777 == 0o600

    from syslrn.embed import BagOfNodes
    from syslrn.graph import build_graph

    features = BagOfNodes().features(build_graph(trace))
    assert features == {
        "count:gunicorn": 1.0,
        "degree:gunicorn": 1.0,
        "count:postgres": 1.0,
        "degree:postgres": 1.0,
    }
    assert not build_graph(trace).external.any()


def _timed_trace(path, host, start_s, stop_s):
    meta = {
        "host": host,
        "labels": {"phase": "workload"},
        "started_unix_ns": int((1_700_000_000 + start_s) * 1e9),
        "stopped_unix_ns": int((1_700_000_000 + stop_s) * 1e9),
    }
    rows = [dict(ts_ns=1, host=host, kind="snapshot", pid=5, start_ns=50, comm="sh")]
    return write_trace(path, table_from_rows(rows), meta)


def test_merge_command_checks_time_gap(tmp_path, capsys, caplog):
    web = _timed_trace(tmp_path / "web.parquet", "web", 0, 10)
    db = _timed_trace(tmp_path / "db.parquet", "db", 3600, 3610)
    merged = tmp_path / "run.parquet"

    assert main(["merge", str(web), str(db), "-o", str(merged)]) == 2
    err = capsys.readouterr().err
    assert "more than the maximum gap of 60 s" in err
    assert "raise --max-gap" in err
    assert not merged.exists()

    with caplog.at_level(logging.WARNING, logger="syslrn"):
        status = main(
            ["merge", str(web), str(db), "-o", str(merged), "--max-gap", "7200"]
        )
    assert status == 0
    assert any("do not overlap" in r.getMessage() for r in caplog.records)
    assert read_trace(merged).meta["stopped_unix_ns"] == int(1_700_003_610 * 1e9)


def test_merge_rejects_same_host(tmp_path, capsys):
    path = write_shell_run(tmp_path / "a.parquet", 2, 1)

    assert main(["merge", str(path), str(path), "-o", str(tmp_path / "m.parquet")]) == 2
    assert "also appears in" in capsys.readouterr().err


@pytest.mark.parametrize(
    "option, message",
    [
        (["--r2-threshold", "1.5"], "R^2 threshold 1.5 must be a number within [0, 1]"),
        (
            ["--model-param", "tolerance_k=-1"],
            "tolerance_k=-1 must be a number of 0 or more",
        ),
        (
            ["--embedding", "wl", "--embedding-param", "iterations=two"],
            "iterations='two' must be a whole number",
        ),
        (["--model", "ridge"], "model 'ridge' is unknown"),
        (["--model-param", "alpha"], "expected NAME=VALUE"),
    ],
)
def test_train_rejects_bad_parameters(shell_runs, tmp_path, capsys, option, message):
    assert _train(shell_runs.training, tmp_path / "m.json", *option) == 2
    assert message in capsys.readouterr().err
