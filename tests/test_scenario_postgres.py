"""The PostgreSQL scenario against a real PostgreSQL 15 on a unix socket."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest

from syslrn.scenarios import get_scenario
from syslrn.scenarios.postgres import BINDIR, PostgresScenario
from syslrn.scenarios.support import ScenarioError, child_pids

pytestmark = [
    pytest.mark.skipif(
        os.geteuid() != 0,
        reason="starts the server as user postgres and mounts a tmpfs: needs root",
    ),
    pytest.mark.skipif(
        not (BINDIR / "postgres").exists(),
        reason=f"PostgreSQL 15 not installed ({BINDIR}); run scripts/setup --servers",
    ),
]


def _new_workdir() -> Path:
    # Not pytest's tmp_path: its parent is mode 0700, so the server user
    # could not reach the cluster. The system temp directory is 1777.
    return Path(tempfile.mkdtemp(prefix="syslrn-test-pg-"))


def _start_time(pid: int) -> str | None:
    """Return field 22 of /proc/PID/stat (start time), None if the process is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rpartition(")")[2].split()[19]


@pytest.fixture(scope="module")
def scenario():
    workdir = _new_workdir()
    scenario = get_scenario("postgres", workdir)
    scenario.setup()
    yield scenario
    scenario.teardown()
    shutil.rmtree(workdir, ignore_errors=True)


def _log_text(scenario: PostgresScenario) -> str:
    return scenario.log_path.read_text(errors="replace")


def test_setup_serves_check_session(scenario):
    scenario.check()

    assert scenario.trigger == f"unix:{scenario.socket_path}"
    assert scenario.socket_path.is_socket()
    assert os.path.ismount(scenario.spool_dir)
    assert "database system is ready to accept connections" in _log_text(scenario)


@pytest.mark.parametrize("n", [1, 2])
def test_workload_sessions_succeed(scenario, n):
    before = _log_text(scenario).count("connection authorized: user=app")

    result = scenario.run_workload(n)

    assert result.requests == n
    assert result.errors == 0, result.messages
    after = _log_text(scenario).count("connection authorized: user=app")
    assert after - before == n
    # run_workload returns once the server side of each session is gone too.
    assert scenario.client_backends() == []


def test_workload_of_zero_sessions(scenario):
    result = scenario.run_workload(0)

    assert result.requests == 0
    assert result.errors == 0


def test_log_source_groups_sessions(scenario):
    (source,) = scenario.logs()
    scenario.run_workload(2)

    pattern = re.compile(source.session_regex)
    lines = _log_text(scenario).splitlines()
    prefixed = [line for line in lines if re.match(r"\d{4}-\d\d-\d\d ", line)]
    assert prefixed
    assert all(pattern.search(line) for line in prefixed)
    sessions = {
        pattern.search(line).group(1)
        for line in prefixed
        if "connection authorized: user=app" in line
    }
    # Each session has its own %c id, shared by all of its lines.
    authorized = sum("connection authorized: user=app" in line for line in prefixed)
    assert len(sessions) == authorized
    for pattern_text, _ in source.masks:
        re.compile(pattern_text)


FAST_FAULTS = [
    "backend-terminated",
    "backend-killed",
    "disk-full",
    "tablespace-permission",
    "helper-fails",
    "auth-misconfigured",
    "connection-limit",
    "process-limit",
]


def test_fault_catalogue_is_complete(scenario):
    faults = scenario.faults()

    assert set(faults) == {*FAST_FAULTS, "helper-hangs"}
    for name, fault in faults.items():
        assert fault.name == name
        assert fault.description


@pytest.mark.parametrize(
    "name", [*FAST_FAULTS, pytest.param("helper-hangs", marks=pytest.mark.slow)]
)
def test_fault_fails_sessions_until_reverted(scenario, name):
    fault = scenario.faults()[name]

    # As a campaign does before each experiment. Without it, the previous
    # test's concurrent sessions may have extended the table by spare pages
    # (PostgreSQL 15 adds 20 per waiting backend), and then disk-full's
    # sessions insert into those without needing the full file system.
    scenario.reset()
    fault.apply()
    try:
        # Four concurrent sessions: connection-limit fails only concurrent ones.
        faulty = scenario.run_workload(4)
    finally:
        fault.revert()
    scenario.reset()
    scenario.check()
    healthy = scenario.run_workload(2)

    assert faulty.errors > 0, f"{name} caused no session error"
    assert faulty.messages
    assert healthy.errors == 0, healthy.messages


def test_fault_apply_twice_raises(scenario):
    fault = scenario.faults()["helper-fails"]
    fault.apply()
    try:
        with pytest.raises(ScenarioError, match="already applied"):
            fault.apply()
    finally:
        fault.revert()


def test_teardown_leaves_no_process_or_mount():
    workdir = _new_workdir()
    scenario = PostgresScenario(workdir)
    try:
        scenario.setup()
        scenario.run_workload(1)
        pids = [scenario.server_pid, *child_pids(scenario.server_pid)]
        # A child that exits between the listing and the read has no start
        # time, and nothing left to check.
        started = {pid: _start_time(pid) for pid in pids}
        started = {pid: start for pid, start in started.items() if start is not None}
        spool = scenario.spool_dir
    finally:
        scenario.teardown()

    assert len(pids) > 1
    for pid, start in started.items():
        # A PID that lives on with another start time is a new process.
        assert _start_time(pid) != start, f"process {pid} outlived teardown"
    assert not os.path.ismount(spool)
    assert list(workdir.iterdir()) == []
    workdir.rmdir()


def test_unreachable_workdir_raises(tmp_path):
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    scenario = PostgresScenario(private / "pg")

    with pytest.raises(ScenarioError, match="cannot traverse"):
        scenario.setup()
    assert not os.path.ismount(private / "pg" / "spool")


def test_setup_twice_raises_and_keeps_server(scenario):
    with pytest.raises(ScenarioError, match="already set up"):
        scenario.setup()

    scenario.check()


def test_setup_keeps_foreign_workdir_contents():
    workdir = _new_workdir()
    (workdir / "data").mkdir()
    (workdir / "data" / "keep.txt").write_text("not ours")
    scenario = PostgresScenario(workdir)
    try:
        with pytest.raises(ScenarioError, match="already contains data/"):
            scenario.setup()

        assert (workdir / "data" / "keep.txt").read_text() == "not ours"
    finally:
        shutil.rmtree(workdir)
