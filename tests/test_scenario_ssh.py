"""The OpenSSH scenario against a real sshd on loopback."""

from __future__ import annotations

import os
import pwd
import re
import shutil
from collections import defaultdict
from pathlib import Path

import pytest

from syslrn.scenarios import host, scenario_class
from syslrn.scenarios.ssh import SSH_USER, SSHD, SshScenario

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not os.access(SSHD, os.X_OK) or shutil.which("ssh") is None,
    reason="needs root and the openssh-server and openssh-client packages",
)

# Faults that fail a session within a second. command-hangs makes each
# session wait for the timeout and is tested with tear-down below.
QUICK_FAULTS = [
    "command-fails",
    "session-killed",
    "scratch-full",
    "keys-permission",
    "key-algorithms",
    "config-typo",
    "process-limit",
]


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    scenario = SshScenario(tmp_path_factory.mktemp("ssh"), timeout=20)
    scenario.setup()
    yield scenario
    scenario.teardown()


def test_registry_returns_ssh():
    assert scenario_class("ssh") is SshScenario


def test_check_passes(scenario):
    scenario.check()


@pytest.mark.parametrize("n", [1, 2])
def test_workload_runs_every_session(scenario, n):
    scenario.reset()

    result = scenario.run_workload(n)

    assert result.requests == n
    assert result.errors == 0, result.messages


def test_trigger_is_listening_sshd(scenario):
    kind, port = scenario.trigger.split(":")

    assert kind == "tcp"
    assert int(port) == scenario.port
    assert host.listening(scenario.port)


def test_log_groups_lines_by_client_port(scenario):
    scenario.reset()
    scenario.run_workload(2)
    (source,) = scenario.logs()

    by_port = defaultdict(list)
    for line in source.path.read_text().splitlines():
        match = re.search(source.session_regex, line)
        if match:
            by_port[match.group(1)].append(line)
    sessions = [
        lines
        for lines in by_port.values()
        if any(line.startswith("Accepted publickey") for line in lines)
    ]

    assert str(scenario.port) not in by_port
    assert len(sessions) >= 2
    for lines in sessions:
        assert any(line.startswith("Starting session: command") for line in lines)
        assert any(line.startswith("Disconnected from user") for line in lines)


def test_catalogue_names_every_fault(scenario):
    faults = scenario.faults()

    assert set(QUICK_FAULTS) | {"command-hangs"} <= set(faults)
    for name, fault in faults.items():
        assert fault.name == name
        assert fault.description


@pytest.mark.parametrize("name", QUICK_FAULTS)
def test_fault_fails_sessions_until_reverted(scenario, name):
    scenario.reset()
    fault = scenario.faults()[name]

    fault.apply()
    try:
        failed = scenario.run_workload(2)
    finally:
        fault.revert()
    scenario.reset()
    recovered = scenario.run_workload(2)

    assert failed.errors == 2, failed.messages
    assert len(failed.messages) == 2
    assert recovered.errors == 0, recovered.messages


def _user_processes(uid: int) -> list[int]:
    pids = [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]
    return [pid for pid in pids if host.process_uid(pid) == uid and host.is_alive(pid)]


def test_teardown_kills_hung_sessions(tmp_path):
    scenario = SshScenario(tmp_path, timeout=2)
    scenario.setup()
    try:
        listener = scenario.sshd_pid
        uid = pwd.getpwnam(SSH_USER).pw_uid
        scenario.faults()["command-hangs"].apply()
        result = scenario.run_workload(2)
        # The killed clients' sessions end, and their commands are
        # re-parented to init, so they are found by their user.
        hung = [
            pid for pid in _user_processes(uid) if host.process_comm(pid) == "sleep"
        ]
        started = [listener, *host.descendant_pids(listener), *hung]
        shared_dir = scenario.shared_dir
    finally:
        scenario.teardown()

    assert result.errors == 2
    assert re.search(r"session timed out after \d+ s$", result.messages[0])
    assert hung, "the hanging command was not running"
    assert [pid for pid in started if host.is_alive(pid)] == []
    assert not host.listening(scenario.port)
    assert host.instance_processes(scenario.instance) == []
    assert not Path(shared_dir).exists()
    assert scenario.sshd_log.exists()


def test_dropped_replies_time_out_sessions(tmp_path):
    # Its own scenario with a short timeout: every session waits it out.
    scenario = SshScenario(tmp_path / "work", timeout=3)
    scenario.setup()
    try:
        fault = scenario.faults()["replies-dropped"]
        fault.apply()
        try:
            failed = scenario.run_workload(2)
        finally:
            fault.revert()
        scenario.reset()
        recovered = scenario.run_workload(2)
    finally:
        scenario.teardown()

    assert failed.errors == 2, failed.messages
    assert recovered.errors == 0, recovered.messages
