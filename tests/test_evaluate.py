"""Cross-validation, metrics, and the runs that evaluation reads."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from learn_workloads import write_shell_run
from syslrn.errors import SyslrnError
from syslrn.evaluate.crossval import cross_validate
from syslrn.evaluate.folds import make_folds
from syslrn.evaluate.metrics import Confusion
from syslrn.evaluate.runs import (
    TableOptions,
    load_graph,
    require_requests,
    resolve_runs,
    run_duration_s,
)
from syslrn.model import LinearModel
from syslrn.trace.io import Trace
from syslrn.trace.schema import table_from_rows


def test_confusion_metrics():
    truth = [True, True, True, True, False, False, False, False, False, False]
    flagged = [True, True, True, False, True, False, False, False, False, False]
    confusion = Confusion.of(truth, flagged)

    assert confusion.to_dict() == {"tp": 3, "fp": 1, "tn": 5, "fn": 1}
    assert confusion.recall == pytest.approx(0.75)
    assert confusion.selectivity == pytest.approx(5 / 6)
    assert confusion.precision == pytest.approx(0.75)
    assert confusion.f1 == pytest.approx(0.75)


def test_undefined_metrics_are_nan():
    confusion = Confusion.of([False, False], [False, False])

    assert math.isnan(confusion.recall)
    assert math.isnan(confusion.precision)
    assert math.isnan(confusion.f1)
    assert confusion.selectivity == 1.0


def _synthetic(n_normal=30, n_failure=6, seed=0):
    """Rows where failure runs lack half their workers, as a bag-of-nodes would show."""
    rng = np.random.default_rng(seed)
    requests = rng.integers(5, 50, n_normal + n_failure).tolist()
    rows, faults = [], []
    for i, r in enumerate(requests):
        failure = i >= n_normal
        workers = r if failure else 2 * r
        rows.append(
            {"count:worker": float(workers), "count:cron": float(rng.integers(0, 4))}
        )
        if not failure:
            faults.append(None)
        elif i % 2:
            faults.append("kill-a")
        else:
            faults.append("kill-b")
    is_failure = [f is not None for f in faults]
    return rows, requests, is_failure, faults


def _evaluate(rows, requests, is_failure, faults, folds):
    return cross_validate(
        rows,
        requests,
        is_failure,
        faults,
        folds,
        embedding={"name": "bag-of-nodes", "params": {}},
        describe=lambda n: tuple(n.split(":", 1)),
        make_estimator=LinearModel,
    )


def test_folds_never_train_on_failures():
    rows, requests, is_failure, faults = _synthetic()
    folds = make_folds(is_failure, n_folds=5, seed=0)
    failures = {i for i, bad in enumerate(is_failure) if bad}
    tested = [i for f in folds for i in f.test if not is_failure[i]]

    for fold in folds:
        assert not failures & set(fold.train)
        assert failures <= set(fold.test)
        assert not set(fold.train) & set(fold.test)
    assert sorted(tested) == [i for i, bad in enumerate(is_failure) if not bad]


def test_cross_validation_counts_every_test_run():
    rows, requests, is_failure, faults = _synthetic()
    folds = make_folds(is_failure, n_folds=5, seed=0)
    evaluation = _evaluate(rows, requests, is_failure, faults, folds)
    pooled = evaluation.pooled()

    assert pooled.tp + pooled.fn == 5 * sum(is_failure)
    assert pooled.tn + pooled.fp == len(is_failure) - sum(is_failure)
    assert evaluation.summary()["recall"] == 1.0
    assert evaluation.summary()["selectivity"] == 1.0
    assert evaluation.per_fault() == {
        "kill-a": {"runs": 3, "recall": 1.0},
        "kill-b": {"runs": 3, "recall": 1.0},
    }


def test_cross_validation_is_reproducible():
    rows, requests, is_failure, faults = _synthetic(seed=3)
    first = _evaluate(
        rows, requests, is_failure, faults, make_folds(is_failure, 5, seed=4)
    )
    second = _evaluate(
        rows, requests, is_failure, faults, make_folds(is_failure, 5, seed=4)
    )

    assert first.to_dict() == second.to_dict()


def test_cross_validation_sees_missed_failures():
    rows, requests, is_failure, faults = _synthetic()
    # One failure run looks normal: every fold must miss it.
    rows[-1] = {"count:worker": 2.0 * requests[-1], "count:cron": 1.0}
    evaluation = _evaluate(
        rows, requests, is_failure, faults, make_folds(is_failure, n_folds=5, seed=0)
    )

    assert evaluation.summary()["recall"] == pytest.approx(5 / 6)
    missed = "kill-a" if (len(rows) - 1) % 2 else "kill-b"
    assert evaluation.per_fault()[missed]["recall"] == pytest.approx(2 / 3)


def _write_campaign(tmp_path, rows, header="id,phase,requests,fault,failure,trace"):
    directory = tmp_path / "campaign"
    directory.mkdir()
    (directory / "index.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    return directory


def test_campaign_runs_sorted_by_id(tmp_path):
    directory = _write_campaign(
        tmp_path,
        [
            "exp-2,workload,8,none,false,exp-2/trace.parquet",
            "exp-1,workload,4,kill,true,exp-1/trace.parquet",
            "start,startup,,none,false,start/trace.parquet",
        ],
    )
    runset = resolve_runs([directory])

    assert [r.name for r in runset.runs] == ["exp-1", "exp-2", "start"]
    assert [r.name for r in runset.experiments()] == ["exp-1", "exp-2"]
    exp1 = runset.runs[0]
    assert exp1.failure
    assert exp1.fault == "kill"
    assert exp1.requests == 4
    assert exp1.path == directory / "exp-1" / "trace.parquet"
    assert runset.phase("startup")[0].requests is None


def test_campaign_trace_count_wins(tmp_path):
    directory = _write_campaign(tmp_path, ["exp-1,workload,4,none,false,run.parquet"])
    write_shell_run(directory / "run.parquet", 6, 1)
    run = resolve_runs([directory]).runs[0]
    graph = load_graph(run)

    assert run.requests == 6
    assert graph.requests == 6


def test_campaign_rejects_bad_failure_value(tmp_path):
    directory = _write_campaign(tmp_path, ["exp-1,workload,4,none,maybe,x.parquet"])

    with pytest.raises(
        SyslrnError, match="line 2: failure='maybe' is not true or false"
    ):
        resolve_runs([directory])


def test_campaign_requires_columns(tmp_path):
    directory = _write_campaign(tmp_path, ["exp-1,x.parquet"], header="id,trace")

    with pytest.raises(SyslrnError, match="missing columns"):
        resolve_runs([directory])


def test_directory_without_index(tmp_path):
    with pytest.raises(SyslrnError, match="has no index.csv"):
        resolve_runs([tmp_path])


def test_trace_labels_give_fault(tmp_path):
    normal = write_shell_run(tmp_path / "a.parquet", 3, 1, labels={"fault": "none"})
    failed = write_shell_run(tmp_path / "b.parquet", 3, 1, labels={"fault": "oom"})
    plain = write_shell_run(tmp_path / "c.parquet", 3, 1)
    runs = resolve_runs([failed, plain, normal]).runs

    assert [r.path.name for r in runs] == ["a.parquet", "b.parquet", "c.parquet"]
    assert [r.failure for r in runs] == [False, True, False]
    assert runs[1].fault == "oom"


def test_require_requests_names_runs(tmp_path):
    directory = _write_campaign(
        tmp_path,
        [
            "e1,workload,,none,false,x.parquet",
            "e2,workload,,none,false,y.parquet",
            "e3,workload,5,none,false,z.parquet",
        ],
    )
    runs = resolve_runs([directory]).runs

    with pytest.raises(SyslrnError, match="runs without a request count: e1, e2"):
        require_requests(runs)


def test_run_duration_and_request_gap(tmp_path):
    path = write_shell_run(tmp_path / "run.parquet", 4, 2)
    run = resolve_runs([path]).runs[0]
    load_graph(run)

    # Requests are 7 ms apart: one tick for the request row, three per child.
    assert run.max_request_gap_s == pytest.approx(0.007)
    assert run.duration_s > run.max_request_gap_s


def _table_rows():
    return {
        "id": ["r1", "r2", "r3", "r4"],
        "requests": [10, 20, 30, 40],
        "label": ["none", "none", "none", "disk-full"],
        "count:worker": [20, 40, 60, 10],
        "host": ["a", "a", "b", "b"],
    }


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet"])
def test_feature_table_formats(tmp_path, suffix):
    columns = _table_rows()
    path = tmp_path / f"features{suffix}"
    if suffix == ".parquet":
        pq.write_table(pa.table(columns), path)
    else:
        sep = "," if suffix == ".csv" else "\t"
        lines = [sep.join(columns)] + [
            sep.join(str(columns[c][i]) for c in columns) for i in range(4)
        ]
        path.write_text("\n".join(lines) + "\n")
    runset = resolve_runs([path])

    assert runset.kind == "table"
    assert runset.feature_columns == ["count:worker"]
    assert [r.name for r in runset.runs] == ["r1", "r2", "r3", "r4"]
    assert [r.failure for r in runset.runs] == [False, False, False, True]
    assert runset.runs[3].fault == "disk-full"
    assert runset.runs[1].features == {"count:worker": 40.0}
    assert runset.runs[2].requests == 30


def test_feature_table_options(tmp_path):
    path = tmp_path / "features.csv"
    path.write_text("n,outcome,x\n5,ok,1\n6,bad,2\n")
    runset = resolve_runs(
        [path],
        TableOptions(request_column="n", label_column="outcome", normal_label="ok"),
    )

    assert [r.failure for r in runset.runs] == [False, True]
    assert [r.name for r in runset.runs] == ["row 1", "row 2"]


def test_feature_table_without_request_column(tmp_path):
    path = tmp_path / "features.csv"
    path.write_text("x,label\n1,none\n")

    with pytest.raises(SyslrnError, match="no request column 'requests'"):
        resolve_runs([path])


def test_feature_table_blank_requests_named(tmp_path):
    path = tmp_path / "features.csv"
    path.write_text("id,requests,x\nr1,,1\nr2,4,2\n")
    runs = resolve_runs([path]).runs

    with pytest.raises(SyslrnError, match="runs without a request count: r1"):
        require_requests(runs)


def test_table_and_traces_do_not_mix(tmp_path):
    table = tmp_path / "features.csv"
    table.write_text("requests,x\n1,1\n")
    trace = write_shell_run(tmp_path / "run.parquet", 2, 1)

    with pytest.raises(SyslrnError, match="must be the only input"):
        resolve_runs([trace, table])


def test_run_duration_from_recorder_times():
    meta = {"started_ns": 2_000_000_000, "stopped_ns": 5_500_000_000}
    trace = Trace(table=table_from_rows([]), meta=meta)

    assert run_duration_s(trace) == pytest.approx(3.5)
