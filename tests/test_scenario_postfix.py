"""The Postfix scenario against a real Postfix instance on loopback."""

from __future__ import annotations

import os
import re
import shutil
from collections import defaultdict
from pathlib import Path

import pytest

from syslrn.scenarios import host, scenario_class
from syslrn.scenarios.postfix import PostfixScenario

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0
    or shutil.which("postconf") is None
    or shutil.which("swaks") is None,
    reason="needs root and the postfix and swaks packages",
)

# Faults that fail a workload within seconds. The others make it wait for
# its timeout and are left to the campaigns.
QUICK_FAULTS = ["helper-fails", "mailbox-full", "size-limit", "process-limit"]


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    scenario = PostfixScenario(tmp_path_factory.mktemp("postfix"), timeout=20)
    scenario.setup()
    yield scenario
    scenario.teardown()


def _stored_messages(scenario: PostfixScenario) -> int:
    return len(list((scenario.mailbox / "new").iterdir()))


def test_registry_returns_postfix():
    assert scenario_class("postfix") is PostfixScenario


def test_check_passes(scenario):
    scenario.check()


@pytest.mark.parametrize("n", [1, 2])
def test_workload_delivers_every_message(scenario, n):
    scenario.reset()

    result = scenario.run_workload(n)

    assert result.requests == n
    assert result.errors == 0, result.messages
    assert _stored_messages(scenario) == n


def test_trigger_is_listening_smtpd(scenario):
    kind, port = scenario.trigger.split(":")

    assert kind == "tcp"
    assert int(port) == scenario.port
    assert host.listening(scenario.port)


def test_log_groups_lines_by_queue_id(scenario):
    scenario.reset()
    scenario.run_workload(2)
    (source,) = scenario.logs()

    by_queue_id = defaultdict(list)
    for line in source.path.read_text().splitlines():
        match = re.search(source.session_regex, line)
        if match:
            by_queue_id[match.group(1)].append(line)
    delivered = [
        lines
        for lines in by_queue_id.values()
        if any("status=sent" in line for line in lines)
    ]

    assert len(delivered) >= 2
    for lines in delivered:
        # One message's path: smtpd, cleanup, qmgr and local all name it.
        daemons = {re.search(r"postfix/(\w+)\[", line).group(1) for line in lines}
        assert {"smtpd", "cleanup", "qmgr", "local"} <= daemons


def test_catalogue_names_every_fault(scenario):
    faults = scenario.faults()

    assert set(QUICK_FAULTS) <= set(faults)
    assert len(faults) >= 6
    for name, fault in faults.items():
        assert fault.name == name
        assert fault.description


@pytest.mark.parametrize("name", QUICK_FAULTS)
def test_fault_fails_requests_until_reverted(scenario, name):
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


def test_teardown_kills_hung_helper(tmp_path):
    # A short workload timeout with a long helper time limit leaves the
    # hung helper running when the workload returns.
    scenario = PostfixScenario(tmp_path, timeout=2, helper_timeout=60)
    scenario.setup()
    try:
        master = scenario.master_pid
        scenario.faults()["helper-hangs"].apply()
        result = scenario.run_workload(1)
        started = [master, *host.descendant_pids(master)]
        hung = [pid for pid in started if host.process_comm(pid) == "sleep"]
        shared_dir = scenario.shared_dir
    finally:
        scenario.teardown()

    assert result.errors == 1
    assert hung, "the hanging helper was not running"
    assert [pid for pid in started if host.is_alive(pid)] == []
    assert not host.listening(scenario.port)
    assert host.instance_processes(scenario.instance) == []
    assert not Path(shared_dir).exists()
    assert scenario.maillog.exists()
