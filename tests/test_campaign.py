"""The campaign runner: plan, directory layout, index and resume.

The runner tests drive the real PostgreSQL scenario. Most of them record
through ``FakeRecorder``, a test double that loads no BPF, so that the
layout and resume logic run in a few seconds. ``test_campaign_real_recorder``
runs the real recorder.
"""

from __future__ import annotations

import csv
import io
import json
import os
import stat
from pathlib import Path

import pytest

from syslrn.baselines.campaign import load_campaign
from syslrn.errors import CampaignError, SyslrnError
from syslrn.evaluate.campaign import CampaignRunner
from syslrn.evaluate.dataset import (
    INDEX_COLUMNS,
    append_index,
    read_index,
    write_index,
)
from syslrn.evaluate.plan import CampaignParams, plan_campaign
from syslrn.evaluate.progress import ProgressBar
from syslrn.scenarios.postgres import BINDIR
from syslrn.trace import read_trace
from syslrn.trace.io import write_trace
from syslrn.trace.schema import FLAG_DRIVER, empty_table


def _postgres_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "starts the server as user postgres and mounts a tmpfs: needs root"
    if not (BINDIR / "postgres").exists():
        return f"PostgreSQL 15 not installed ({BINDIR}); run scripts/setup --servers"
    return None


needs_postgres = pytest.mark.skipif(
    _postgres_unavailable() is not None, reason=str(_postgres_unavailable())
)


class FakeRecorder:
    """Test double of syslrn.collect.recorder.Recorder, same constructor and calls.

    It writes an empty trace with the labels and counts no requests. It
    exists only to test the runner's layout and resume logic without BPF;
    test_campaign_real_recorder exercises the real recorder.
    """

    def __init__(self, output, trigger=None, labels=None, host=None, on_start=None):
        self.output = Path(output)
        self.trigger = trigger
        self.labels = dict(labels or {})
        self.on_start = on_start

    def start(self):
        if self.on_start is not None:
            self.on_start(self)
        return self

    def stop(self):
        meta = {
            "host": "test",
            "labels": self.labels,
            "trigger": self.trigger,
            "requests": None,
            "lost_events": 0,
        }
        write_trace(self.output, empty_table(), meta)
        return meta


def _fake_factory(started: list, interrupt_at: int | None = None):
    """Return a recorder factory that raises KeyboardInterrupt at the Nth start."""

    def on_start(recorder):
        started.append(recorder.labels["experiment"])
        if interrupt_at is not None and len(started) == interrupt_at:
            raise KeyboardInterrupt

    def factory(output, trigger=None, labels=None, host=None):
        return FakeRecorder(output, trigger, labels, host, on_start=on_start)

    return factory


def _index(directory: Path) -> list[dict[str, str]]:
    with open(directory / "index.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- plan ------------------------------------------------------------------


def test_plan_same_for_same_seed():
    params = CampaignParams(runs=12, sizes=(1, 2, 4), fault_ratio=0.5, seed=3)
    faults = ["a", "b", "c"]

    first = plan_campaign(params, faults)
    second = plan_campaign(params, faults)
    other = plan_campaign(CampaignParams(runs=12, sizes=(1, 2, 4), seed=4), faults)

    assert first == second
    assert first != other


def test_plan_counts_and_order():
    params = CampaignParams(
        runs=12, sizes=(1, 2, 4), fault_ratio=0.5, startup_runs=2, idle_runs=3
    )

    plan = plan_campaign(params, ["a", "b", "c"])

    assert [e.id for e in plan] == [f"e{i:04d}" for i in range(1, 18)]
    assert [e.phase for e in plan[:2]] == ["startup", "startup"]
    workload = [e for e in plan if e.phase == "workload"]
    assert len(workload) == 12
    assert sum(e.phase == "idle" for e in plan) == 3
    faulty = [e for e in workload if e.fault != "none"]
    assert len(faulty) == 6
    # Each fault twice, each size four times.
    assert sorted(e.fault for e in faulty) == ["a", "a", "b", "b", "c", "c"]
    assert sorted(e.requested for e in workload) == [1] * 4 + [2] * 4 + [4] * 4
    assert all(
        e.requested == 0 and e.fault == "none" for e in plan if e.phase != "workload"
    )


def test_plan_without_faults():
    plan = plan_campaign(CampaignParams(runs=4, fault_ratio=1.0), [])

    assert all(e.fault == "none" for e in plan)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"runs": -1},
        {"runs": 2, "sizes": ()},
        {"runs": 2, "sizes": (0, 1)},
        {"runs": 2, "fault_ratio": 1.5},
        {"runs": 2, "idle_runs": -1},
        {"runs": 2, "idle_seconds": 0},
    ],
)
def test_params_invalid_raise(kwargs):
    with pytest.raises(CampaignError):
        CampaignParams(**kwargs)


def test_params_json_round_trip():
    params = CampaignParams(runs=5, sizes=(2, 3), fault_ratio=0.2, seed=9)

    assert CampaignParams.from_json(json.loads(json.dumps(params.to_json()))) == params


# -- index and progress -------------------------------------------------------


def _row(experiment_id: str) -> dict[str, str]:
    return {column: "" for column in INDEX_COLUMNS} | {
        "id": experiment_id,
        "status": "ok",
    }


def test_index_drops_torn_row(tmp_path):
    write_index(tmp_path, [_row("e0001")])
    append_index(tmp_path, _row("e0002"))
    with open(tmp_path / "index.csv", "a") as handle:
        handle.write("e0003,workload,4")  # cut short by an interruption

    rows = read_index(tmp_path)

    assert [row["id"] for row in rows] == ["e0001", "e0002"]
    assert _mode(tmp_path / "index.csv") == 0o600


def test_progress_bar_lines():
    stream = io.StringIO()
    bar = ProgressBar(total=4, done=1, stream=stream, width=8)

    bar.start("e0002 workload n=2")
    bar.finish()
    bar.start("e0003 workload n=4 disk-full")
    bar.finish(failure=True)
    bar.close()

    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("[####....] 2/4")
    assert "left ~" in lines[0]
    assert "e0002 workload n=2" in lines[0]
    assert lines[1].startswith("[######..] 3/4  failures 1  errors 0")


# -- runner on the real scenario -----------------------------------------------


@needs_postgres
def test_campaign_layout(tmp_path):
    directory = tmp_path / "campaign"
    params = CampaignParams(
        runs=3,
        sizes=(1, 2),
        fault_ratio=0.34,
        seed=1,
        startup_runs=1,
        idle_runs=1,
        idle_seconds=0.1,
    )
    started: list[str] = []

    summary = CampaignRunner(
        "postgres", directory, params, recorder_factory=_fake_factory(started)
    ).run()

    assert summary.total == 5
    assert summary.finished == 5
    assert summary.errors == 0
    assert _mode(directory) == 0o700

    campaign = json.loads((directory / "campaign.json").read_text())
    assert campaign["scenario"] == "postgres"
    assert campaign["params"] == params.to_json()
    (source,) = campaign["log_sources"]
    assert source["component"] == "postgres"
    assert source["file"] == "logs/postgres.log"
    assert source["session_regex"]
    assert source["masks"]
    assert len(campaign["experiments"]) == 5
    assert set(campaign["faults"]) >= {"disk-full", "helper-fails"}

    rows = _index(directory)
    assert list(rows[0]) == list(INDEX_COLUMNS)
    assert [row["id"] for row in rows] == [f"e{i:04d}" for i in range(1, 6)]
    assert [row["phase"] for row in rows].count("workload") == 3
    assert rows[0]["phase"] == "startup"

    for row in rows:
        experiment_dir = directory / row["id"]
        labels = json.loads((experiment_dir / "labels.json").read_text())
        trace = read_trace(directory / row["trace"])
        assert row["status"] == "ok"
        assert _mode(experiment_dir) == 0o700
        assert _mode(directory / row["trace"]) == 0o600
        assert labels["id"] == row["id"]
        assert labels["fault"] == row["fault"]
        assert trace.labels["phase"] == row["phase"]
        assert trace.labels["requests"] == row["requested"]
        assert trace.labels["fault"] == row["fault"]
        assert trace.labels["driven"] == (
            "false" if row["phase"] == "startup" else "true"
        )
        # The fake recorder counts nothing at the trigger.
        assert row["requests"] == ""
        failure = row["fault"] != "none" and int(row["workload_errors"]) > 0
        assert row["failure"] == ("true" if failure else "false")
        if row["fault"] == "none":
            assert row["effective"] == ""
            assert row["workload_errors"] == "0"
        else:
            assert row["effective"] == row["failure"]

    # The log-based baselines read the same layout.
    loaded = load_campaign(directory)
    assert [e.id for e in loaded.experiments] == [row["id"] for row in rows]
    assert loaded.source("postgres").masks

    # The log slice of a workload contains its own sessions and no check or
    # reset session.
    for row in rows:
        log_text = (directory / row["id"] / "logs" / "postgres.log").read_text()
        authorized = log_text.count("connection authorized: user=app")
        if row["phase"] == "workload" and row["fault"] == "none":
            assert authorized == int(row["requested"])
        if row["phase"] == "idle":
            assert authorized == 0
        if row["phase"] == "startup":
            assert "database system is ready to accept connections" in log_text


@needs_postgres
def test_campaign_resumes_after_interruption(tmp_path):
    directory = tmp_path / "campaign"
    params = CampaignParams(
        runs=3,
        sizes=(1, 2),
        fault_ratio=0.0,
        startup_runs=0,
        idle_runs=1,
        idle_seconds=0.1,
    )
    started: list[str] = []
    runner = CampaignRunner(
        "postgres",
        directory,
        params,
        recorder_factory=_fake_factory(started, interrupt_at=3),
    )

    with pytest.raises(KeyboardInterrupt):
        runner.run()

    first_rows = _index(directory)
    assert [row["id"] for row in first_rows] == ["e0001", "e0002"]
    # The interrupted experiment is half-written: a directory, no labels.
    assert (directory / "e0003").is_dir()
    assert not (directory / "e0003" / "labels.json").exists()
    kept = (directory / "e0001" / "labels.json").read_bytes()

    restarted: list[str] = []
    summary = CampaignRunner(
        "postgres", directory, None, recorder_factory=_fake_factory(restarted)
    ).run()

    assert summary.skipped == 2
    assert summary.finished == 2
    assert restarted == ["e0003", "e0004"]
    rows = _index(directory)
    assert [row["id"] for row in rows] == ["e0001", "e0002", "e0003", "e0004"]
    assert all(row["status"] == "ok" for row in rows)
    assert (directory / "e0001" / "labels.json").read_bytes() == kept
    assert (directory / "e0003" / "labels.json").exists()


def _failing_factory(started: list, fail_ids: set[str] | None = None):
    """Return a recorder factory whose start raises SyslrnError for ``fail_ids``.

    With ``fail_ids=None`` every start fails.
    """

    def on_start(recorder):
        experiment_id = recorder.labels["experiment"]
        started.append(experiment_id)
        if fail_ids is None or experiment_id in fail_ids:
            raise SyslrnError(f"recorder failed to start for {experiment_id}")

    def factory(output, trigger=None, labels=None, host=None):
        return FakeRecorder(output, trigger, labels, host, on_start=on_start)

    return factory


@pytest.mark.slow
@needs_postgres
def test_campaign_retries_error_on_resume(tmp_path):
    directory = tmp_path / "campaign"
    params = CampaignParams(runs=2, sizes=(1,), startup_runs=0, idle_runs=0)
    started: list[str] = []

    summary = CampaignRunner(
        "postgres",
        directory,
        params,
        recorder_factory=_failing_factory(started, fail_ids={"e0001"}),
    ).run()

    assert summary.errors == 1
    assert started == ["e0001", "e0002"]
    rows = _index(directory)
    assert [row["status"] for row in rows] == ["error", "ok"]
    labels = json.loads((directory / "e0001" / "labels.json").read_text())
    assert "recorder failed to start for e0001" in labels["error"]
    # Readers leave out the experiment that ended with an error.
    assert [e.id for e in load_campaign(directory).experiments] == ["e0002"]

    restarted: list[str] = []
    summary = CampaignRunner(
        "postgres", directory, recorder_factory=_fake_factory(restarted)
    ).run()

    assert restarted == ["e0001"]
    assert summary.skipped == 1
    assert [row["status"] for row in _index(directory)] == ["ok", "ok"]


@pytest.mark.slow
@needs_postgres
def test_campaign_stops_after_repeated_errors(tmp_path):
    directory = tmp_path / "campaign"
    params = CampaignParams(runs=5, sizes=(1,), startup_runs=0, idle_runs=0)
    started: list[str] = []
    runner = CampaignRunner(
        "postgres", directory, params, recorder_factory=_failing_factory(started)
    )

    with pytest.raises(CampaignError, match="3 experiments in a row failed"):
        runner.run()

    assert started == ["e0001", "e0002", "e0003"]
    assert [row["status"] for row in _index(directory)] == ["error"] * 3


def test_campaign_resume_with_other_params_raises(tmp_path):
    directory = tmp_path / "campaign"
    directory.mkdir()
    (directory / "campaign.json").write_text(
        json.dumps(
            {
                "scenario": "postgres",
                "params": CampaignParams(runs=2).to_json(),
                "experiments": [],
            }
        )
    )
    runner = CampaignRunner(
        "postgres",
        directory,
        CampaignParams(runs=3),
        recorder_factory=_fake_factory([]),
    )

    with pytest.raises(CampaignError, match="same ones"):
        runner.run()


def test_campaign_into_foreign_directory_raises(tmp_path):
    (tmp_path / "notes.txt").write_text("not a campaign")
    runner = CampaignRunner(
        "postgres", tmp_path, CampaignParams(runs=1), recorder_factory=_fake_factory([])
    )

    with pytest.raises(CampaignError, match="not empty"):
        runner.run()


def _execs(trace) -> list[dict]:
    return [event for event in trace.table.to_pylist() if event["kind"] == "exec"]


@pytest.mark.bpf
@pytest.mark.slow
@needs_postgres
def test_campaign_real_recorder(tmp_path):
    pytest.importorskip("syslrn.collect.recorder")
    directory = tmp_path / "campaign"
    params = CampaignParams(
        runs=3,
        sizes=(1, 2),
        fault_ratio=0.34,
        seed=2,
        startup_runs=1,
        idle_runs=1,
        idle_seconds=0.5,
    )

    summary = CampaignRunner("postgres", directory, params).run()

    assert summary.errors == 0
    rows = _index(directory)
    for row in rows:
        trace = read_trace(directory / row["trace"])
        assert trace.table.num_rows > 0
        assert trace.meta["trigger"].startswith("unix:")
        # Other processes on the host can fill the ring buffer, so the
        # count is only checked to be there.
        assert row["lost"].isdigit()
        # The scenario's work directory is the parent of its socket's.
        workdir = str(Path(trace.meta["trigger"].removeprefix("unix:")).parent.parent)
        execs = _execs(trace)
        helpers = [e for e in execs if e["filename"] == f"{workdir}/bin/make-rows"]
        clients = [e for e in execs if e["flags"] & FLAG_DRIVER]
        if row["phase"] == "workload" and row["fault"] == "none":
            # The check before and the reset after the recording open
            # sessions too, but outside it: the trigger counts the workload's.
            assert row["requests"] == row["requested"]
            # One COPY helper per session, run by the server, and one psql
            # per session, run by the driver.
            assert len(helpers) == int(row["requested"])
            assert all(not e["flags"] & FLAG_DRIVER for e in helpers)
            assert [e["filename"] for e in clients] == [str(BINDIR / "psql")] * int(
                row["requested"]
            )
        if row["phase"] == "idle":
            assert row["requests"] == "0"
            assert helpers == []
            assert clients == []
        if row["phase"] == "startup":
            assert str(BINDIR / "initdb") in {e["filename"] for e in execs}
            assert str(BINDIR / "postgres") in {e["filename"] for e in execs}
