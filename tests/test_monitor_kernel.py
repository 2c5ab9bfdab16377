"""The tailored monitor's kernel side: plans, attached programs, window counts."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from syslrn.collect.libbpf import BpfObject
from syslrn.collect.trigger import parse_trigger
from syslrn.errors import ModelError, SyslrnError
from syslrn.monitor import kernel
from syslrn.monitor.kernel import MonitorProbes
from syslrn.monitor.online import poll_interval
from syslrn.monitor.plan import make_plan


def _model(*names):
    return {"features": [{"name": name, "kept": True} for name in names]}


def test_count_only_plan_has_no_connection_probes():
    plan = make_plan(_model("count:true", "count:sh"))
    assert plan.programs == [
        "mon_fork",
        "mon_exec",
        "mon_exit",
        "mon_accept",
        "mon_open",
    ]
    assert plan.hooks["mon_open"] == []
    assert plan.probes == 5
    assert not plan.track_degree
    assert [t.name for t in plan.node_types] == ["sh", "true"]


def test_degree_plan_loads_degree_builds():
    plan = make_plan(_model("count:true", "degree:sh"))
    assert plan.programs == [
        "mon_fork_deg",
        "mon_exec_deg",
        "mon_exit",
        "mon_connect",
        "mon_accept_deg",
        "mon_open_deg",
    ]
    assert plan.probes == 6
    assert plan.track_degree
    assert plan.features == ["degree:sh", "count:true"]


def test_plan_rejects_model_without_kept_features():
    with pytest.raises(ModelError, match="keeps no feature"):
        make_plan({"features": [{"name": "count:x", "kept": False}]})


def test_plan_rejects_non_bag_of_nodes_feature():
    with pytest.raises(ModelError, match="not a bag-of-nodes feature"):
        make_plan(_model("wl:abc123"))


def test_plan_rejects_types_sharing_comm_prefix():
    with pytest.raises(ModelError, match="share the 15-byte prefix"):
        make_plan(_model("count:averyverylongname-a", "count:averyverylongname-b"))


def test_plan_rejects_empty_node_type():
    with pytest.raises(ModelError, match="names no node type"):
        make_plan(_model("count:"))


def test_plan_rejects_nul_in_node_type():
    with pytest.raises(ModelError, match="NUL byte"):
        make_plan(_model("count:sh\0x"))


def test_probes_reject_quiet_time_beyond_kernel_range():
    plan = make_plan(_model("count:sh"))
    with pytest.raises(SyslrnError, match="invalid quiet time 1e\\+10 s"):
        MonitorProbes(plan, parse_trigger("tcp:1"), quiet_s=1e10)


@pytest.mark.parametrize(
    ("quiet_s", "poll_s"), [(5.0, 0.2), (0.3, 0.15), (0.05, 0.025), (0.001, 0.01)]
)
def test_poll_interval_follows_quiet_time(quiet_s, poll_s):
    # Two polls per quiet time read every window before the kernel
    # overwrites it, within the bounds of the default interval.
    assert poll_interval(quiet_s) == pytest.approx(poll_s)


def test_plan_rejects_duplicate_feature():
    with pytest.raises(ModelError, match="appears twice"):
        make_plan(_model("count:sh", "count:sh"))


def test_plan_cuts_non_ascii_type_by_bytes():
    # Six three-byte characters: 22 bytes, of which the kernel keeps 15,
    # ending inside the fourth character.
    plan = make_plan(_model("count:slt-\u20ac\u20ac\u20ac\u20ac\u20ac\u20ac"))
    comm = plan.node_types[0].comm.encode("utf-8", errors="surrogateescape")
    assert comm == "slt-\u20ac\u20ac\u20ac".encode() + b"\xe2\x82"
    assert "longer than 15 bytes" in plan.warnings[0]


def test_plan_rejects_non_ascii_types_sharing_prefix():
    with pytest.raises(ModelError, match="share the 15-byte prefix"):
        make_plan(
            _model(
                "count:slt-\u20ac\u20ac\u20ac\u20aca",
                "count:slt-\u20ac\u20ac\u20ac\u20acb",
            )
        )


def test_plan_warns_on_long_type():
    plan = make_plan(_model("count:averyverylongname-a"))
    assert plan.node_types[0].comm == "averyverylongna"
    assert "longer than 15 bytes" in plan.warnings[0]


class _Server:
    """A loopback TCP listener the test accepts on by hand."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]

    def request(self):
        client = socket.create_connection(("127.0.0.1", self.port))
        conn, _ = self.sock.accept()
        client.close()
        conn.close()

    def close(self):
        self.sock.close()


@pytest.mark.bpf
def test_count_only_probes_attach_process_hooks_only():
    plan = make_plan(_model("count:true"))
    probes = MonitorProbes(plan, parse_trigger("tcp:1"), quiet_s=0.3)
    probes.load()
    try:
        hooks = {link.hook for link in probes.obj._links}
    finally:
        probes.close()
    assert hooks == {
        "tp_btf/sched_process_fork",
        "tp_btf/sched_process_exec",
        "tp_btf/sched_process_exit",
        "tracepoint/syscalls/sys_exit_accept4",
        "tracepoint/syscalls/sys_exit_accept",
    }


@pytest.fixture
def own_binaries(tmp_path):
    """A shell and a child program under names no other process on the host
    uses, so that the host-wide counts are the test's own."""
    shell = tmp_path / "slt-sh"
    child = tmp_path / "slt-true"
    shutil.copy("/bin/dash", shell)
    shutil.copy("/bin/true", child)
    return shell, child


@pytest.mark.bpf
def test_window_counts_children_per_request(own_binaries):
    shell, child = own_binaries
    plan = make_plan(
        _model("count:slt-true", "degree:slt-true", "count:slt-sh", "degree:slt-sh")
    )
    server = _Server()
    probes = MonitorProbes(plan, parse_trigger(f"tcp:{server.port}"), quiet_s=0.5)
    probes.load()
    try:
        for _ in range(3):
            server.request()
            # dash forks once per command of a list and execs none of them.
            subprocess.run([str(shell), "-c", f"{child}; {child}"], check=True)
        state = probes.state()
        window = probes.window(state.epoch, state.current)
        time.sleep(0.7)
        after = probes.state()
    finally:
        probes.close()
        server.close()
    assert state.epoch == 1
    assert window.requests == 3
    # Per request: one shell, with a spawn edge to its parent and one to
    # each of its two children, and two children with one spawn edge each.
    assert window.values == {
        "count:slt-sh": 3,
        "degree:slt-sh": 9,
        "count:slt-true": 6,
        "degree:slt-true": 6,
    }
    assert after.epoch == 1
    assert after.current.requests == 3


@pytest.mark.bpf
def test_non_ascii_type_counted_by_its_bytes(tmp_path):
    # The kernel cuts this comm inside a character; the plan's key must be
    # the same 15 bytes.
    name = "slt-\u20ac\u20ac\u20ac\u20ac\u20ac\u20ac"
    child = tmp_path / name
    shutil.copy("/bin/true", child)
    plan = make_plan(_model(f"count:{name}"))
    server = _Server()
    probes = MonitorProbes(plan, parse_trigger(f"tcp:{server.port}"), quiet_s=0.5)
    probes.load()
    try:
        server.request()
        subprocess.run([str(child)], check=True)
        state = probes.state()
        window = probes.window(state.epoch, state.current)
    finally:
        probes.close()
        server.close()
    assert window.values == {f"count:{name}": 1}


@pytest.mark.bpf
def test_window_closes_and_next_opens(own_binaries):
    shell, child = own_binaries
    plan = make_plan(_model("count:slt-true"))
    server = _Server()
    probes = MonitorProbes(plan, parse_trigger(f"tcp:{server.port}"), quiet_s=0.3)
    probes.load()
    try:
        server.request()
        subprocess.run([str(shell), "-c", str(child)], check=True)
        time.sleep(0.5)
        # Outside any window: not counted.
        subprocess.run([str(child)], check=True)
        server.request()
        server.request()
        state = probes.state()
        first = probes.window(state.epoch - 1, state.previous)
        second = probes.window(state.epoch, state.current)
    finally:
        probes.close()
        server.close()
    assert state.epoch == 2
    assert first.requests == 1
    assert first.values == {"count:slt-true": 1}
    assert second.requests == 2
    assert second.values == {"count:slt-true": 0}


def _accept_unix(address, times):
    """Connect to and accept on a fresh listener at ``address``, ``times`` times."""
    server = socket.socket(socket.AF_UNIX)
    server.bind(address)
    server.listen(8)
    try:
        for _ in range(times):
            client = socket.socket(socket.AF_UNIX)
            client.connect(address)
            conn, _ = server.accept()
            conn.close()
            client.close()
    finally:
        server.close()


@pytest.fixture
def short_dir():
    """A directory with a short path: pytest's own leave little of the 107
    bytes a unix socket path may have."""
    directory = tempfile.mkdtemp(prefix="slt", dir="/tmp")
    yield directory
    shutil.rmtree(directory)


@pytest.mark.bpf
@pytest.mark.parametrize("length", [1, 7, 8, 9, 20, 60, 90])
def test_unix_trigger_matches_name_only(short_dir, length):
    # The kernel compares the name eight bytes at a time: names around a
    # multiple of eight, and a neighbour that differs in its last byte only.
    name = "n" * length
    path = os.path.join(short_dir, name)
    neighbour = os.path.join(short_dir, name[:-1] + "Z")
    plan = make_plan(_model("count:slt-none"))
    probes = MonitorProbes(plan, parse_trigger(f"unix:{path}"), quiet_s=5.0)
    probes.load()
    try:
        _accept_unix(path, 3)
        _accept_unix(neighbour, 2)
        state = probes.state()
    finally:
        probes.close()
    assert state.total_requests == 3


@pytest.mark.bpf
def test_abstract_unix_trigger_matches_name_only():
    name = f"slt-trigger-{os.getpid()}"
    plan = make_plan(_model("count:slt-none"))
    probes = MonitorProbes(plan, parse_trigger(f"unix:@{name}"), quiet_s=5.0)
    probes.load()
    try:
        _accept_unix("\0" + name, 2)
        _accept_unix("\0" + name[:-1] + "Z", 3)
        state = probes.state()
    finally:
        probes.close()
    assert state.total_requests == 2


@pytest.mark.bpf
def test_first_request_opens_window_after_boot():
    # A quiet time longer than the host's uptime simulates a monitor
    # started right after boot, when no request is older than it.
    uptime_s = float(Path("/proc/uptime").read_text().split()[0])
    plan = make_plan(_model("count:slt-none"))
    server = _Server()
    probes = MonitorProbes(
        plan, parse_trigger(f"tcp:{server.port}"), quiet_s=uptime_s + 3600
    )
    probes.load()
    try:
        server.request()
        server.request()
        state = probes.state()
    finally:
        probes.close()
        server.close()
    assert state.epoch == 1
    assert state.current.requests == 2


@pytest.mark.bpf
def test_request_without_window_opener_is_reported():
    # The accept program tail-calls the opener at a window's first request.
    # With the opener's slot emptied, that request must show as an error
    # rather than vanish.
    plan = make_plan(_model("count:slt-none"))
    server = _Server()
    probes = MonitorProbes(plan, parse_trigger(f"tcp:{server.port}"), quiet_s=5.0)
    probes.load()
    try:
        assert probes.obj.map("openers").delete(b"\0\0\0\0")
        server.request()
        state = probes.state()
        errors = probes.errors()
    finally:
        probes.close()
        server.close()
    assert state.epoch == 0
    assert errors == {"procs_full": 0, "no_opener": 1, "open_wait": 0}


# Two processes accept on one listener, so that accepts at a window's start
# run on both CPUs at once and race to open it.
PREFORK_SERVER = """
import os, socket, sys
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(128)
print(srv.getsockname()[1], flush=True)
os.fork()
while True:
    conn, _ = srv.accept()
    conn.close()
"""


@pytest.mark.bpf
def test_racing_first_requests_count_in_window(tmp_path):
    server_path = tmp_path / "slt-prefork"
    os.symlink(sys.executable, server_path)
    # A session of its own, so that both processes go with one killpg().
    server = subprocess.Popen(
        [str(server_path), "-c", PREFORK_SERVER],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    port = int(server.stdout.readline())

    plan = make_plan(_model("count:slt-prefork", "degree:slt-prefork"))
    probes = MonitorProbes(plan, parse_trigger(f"tcp:{port}"), quiet_s=0.2)
    windows = []
    try:
        # Both server processes must be up before the first window opens.
        time.sleep(0.3)
        probes.load()

        for _ in range(20):
            clients = [socket.socket() for _ in range(16)]
            for client in clients:
                client.setblocking(False)
                client.connect_ex(("127.0.0.1", port))
            time.sleep(0.1)
            for client in clients:
                client.close()
            state = probes.state()
            windows.append(probes.window(state.epoch, state.current))
            time.sleep(0.3)
        errors = probes.errors()
    finally:
        probes.close()
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()

    assert [w.epoch for w in windows] == list(range(1, 21))
    for window in windows:
        assert window.requests == 16
        # One connection end per accept; the two processes were alive at
        # the window's opening.
        assert window.values == {"count:slt-prefork": 2, "degree:slt-prefork": 16}
    assert errors == {"procs_full": 0, "no_opener": 0, "open_wait": 0}


def _wait_until_gone(comm, timeout=10.0):
    """Wait until no process named ``comm`` runs; zombies have exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = []
        for entry in Path("/proc").iterdir():
            try:
                stat = (entry / "stat").read_text()
            except (NotADirectoryError, OSError):
                continue
            name, _, rest = stat.partition("(")[2].rpartition(")")
            if name == comm and rest.split()[0] != "Z":
                running.append(entry.name)
        if not running:
            return
        time.sleep(0.01)
    raise AssertionError(f"{comm} processes still running: {running}")


# Forks children that exit at once, as fast as it can, until killed.
FORK_STORM = """
import os
while True:
    if os.fork() == 0:
        os._exit(0)
    os.wait()
"""


@pytest.mark.bpf
def test_fork_storm_at_start_leaves_no_count(tmp_path):
    # Processes that fork and exit while the monitor takes its start-up
    # snapshot must not stay in the live count once they are gone.
    storm_path = tmp_path / "slt-storm"
    os.symlink(sys.executable, storm_path)
    plan = make_plan(_model("count:slt-storm"))
    server = _Server()
    counts = []
    try:
        for _ in range(15):
            storms = [
                subprocess.Popen([str(storm_path), "-c", FORK_STORM]) for _ in range(2)
            ]
            probes = MonitorProbes(
                plan, parse_trigger(f"tcp:{server.port}"), quiet_s=5.0
            )
            try:
                time.sleep(0.05)
                probes.load()
                time.sleep(0.05)
            finally:
                for storm in storms:
                    storm.kill()
                    storm.wait()
            # A child the storm forked last may still be running.
            _wait_until_gone("slt-storm")
            try:
                server.request()
                state = probes.state()
                counts.append(probes.window(state.epoch, state.current).values)
            finally:
                probes.close()
    finally:
        server.close()
    assert counts == [{"count:slt-storm": 0}] * 15


@pytest.mark.bpf
def test_processes_missed_by_iterator_counted_from_procfs(tmp_path, monkeypatch):
    # In some sandboxes the task iterator misses processes, and the monitor
    # adds them from procfs. Here the iterator's output is replaced by an
    # empty one (the only stand-in in this test), so that a real process
    # of a kept type reaches procs that way only.
    sleeper = tmp_path / "slt-seed"
    shutil.copy("/bin/sleep", sleeper)
    process = subprocess.Popen([str(sleeper), "30"])
    plan = make_plan(_model("count:slt-seed"))
    server = _Server()
    probes = MonitorProbes(plan, parse_trigger(f"tcp:{server.port}"), quiet_s=0.3)
    try:
        # procfs adds only processes that started a clock tick before attach.
        time.sleep(0.05)
        monkeypatch.setattr(BpfObject, "iterate", lambda obj, program: b"")
        probes.load()

        server.request()
        state = probes.state()
        first = probes.window(state.epoch, state.current)

        process.kill()
        process.wait()
        time.sleep(0.4)
        server.request()
        state = probes.state()
        second = probes.window(state.epoch, state.current)
    finally:
        process.kill()
        process.wait()
        probes.close()
        server.close()
    assert state.epoch == 2
    assert first.values == {"count:slt-seed": 1}
    # The exit program took the process out, so the window after its exit
    # must not count it.
    assert second.values == {"count:slt-seed": 0}


@pytest.mark.bpf
def test_tcp_trigger_ignores_unix_accepts(short_dir):
    # The TCP check reads the accepted socket's local port, which is 0 for
    # a unix socket, so it needs no family check.
    plan = make_plan(_model("count:slt-none"))
    server = _Server()
    probes = MonitorProbes(plan, parse_trigger(f"tcp:{server.port}"), quiet_s=5.0)
    probes.load()
    try:
        _accept_unix(os.path.join(short_dir, "s"), 3)
        server.request()
        state = probes.state()
    finally:
        probes.close()
        server.close()
    assert state.total_requests == 1


@pytest.mark.bpf
def test_procfs_process_exiting_at_start_not_counted(tmp_path, monkeypatch):
    # A process that procfs shows and that exits before the monitor's
    # insert has had its exit event already. The iterator's output is
    # replaced by an empty one, and the exit is forced between the procfs
    # read and the insert (the two stand-ins in this test).
    sleeper = tmp_path / "slt-gone"
    shutil.copy("/bin/sleep", sleeper)
    process = subprocess.Popen([str(sleeper), "30"])
    real_unseen = kernel.unseen_comms

    def unseen_then_exit(seen, started_before_ns):
        comms = real_unseen(seen, started_before_ns)
        process.kill()
        process.wait()
        return comms

    plan = make_plan(_model("count:slt-gone"))
    server = _Server()
    probes = MonitorProbes(plan, parse_trigger(f"tcp:{server.port}"), quiet_s=5.0)
    try:
        time.sleep(0.05)
        monkeypatch.setattr(BpfObject, "iterate", lambda obj, program: b"")
        monkeypatch.setattr(kernel, "unseen_comms", unseen_then_exit)
        probes.load()

        server.request()
        state = probes.state()
        window = probes.window(state.epoch, state.current)
    finally:
        process.kill()
        process.wait()
        probes.close()
        server.close()
    assert window.values == {"count:slt-gone": 0}


@pytest.mark.bpf
def test_request_during_start_opens_no_window(tmp_path, monkeypatch):
    # A request that comes while the snapshot counts the live processes
    # must not open a window from counts that miss them.
    sleeper = tmp_path / "slt-early"
    shutil.copy("/bin/sleep", sleeper)
    sleepers = [subprocess.Popen([str(sleeper), "30"]) for _ in range(3)]
    plan = make_plan(_model("count:slt-early"))
    server = _Server()
    probes = MonitorProbes(plan, parse_trigger(f"tcp:{server.port}"), quiet_s=5.0)
    real_snapshot = MonitorProbes._snapshot

    def request_then_snapshot(self, attached_ns):
        server.request()
        real_snapshot(self, attached_ns)

    monkeypatch.setattr(MonitorProbes, "_snapshot", request_then_snapshot)
    try:
        probes.load()

        server.request()
        state = probes.state()
        window = probes.window(state.epoch, state.current)
    finally:
        for process in sleepers:
            process.kill()
            process.wait()
        probes.close()
        server.close()
    assert state.epoch == 1
    assert window.requests == 1
    assert window.values == {"count:slt-early": 3}


SPAWNER = """
import subprocess, sys, time
for _ in range(int(sys.argv[2])):
    subprocess.Popen([sys.argv[1], "30"])
    time.sleep(0.01)
print("done", flush=True)
time.sleep(30)
"""


@pytest.mark.bpf
def test_exec_during_slow_attach_keeps_type(tmp_path, monkeypatch):
    # A child forked once the fork program runs, that execs before the
    # exec program runs, would keep its parent's type. A pause after each
    # attach (the stand-in in this test) widens that gap as a slow host
    # would.
    spawner_path = tmp_path / "slt-spawn"
    os.symlink(sys.executable, spawner_path)
    child = tmp_path / "slt-nap"
    shutil.copy("/bin/sleep", child)
    real_attach = BpfObject.attach

    def slow_attach(obj, program, hook):
        link = real_attach(obj, program, hook)
        time.sleep(0.05)
        return link

    monkeypatch.setattr(BpfObject, "attach", slow_attach)
    plan = make_plan(_model("count:slt-spawn", "count:slt-nap"))
    server = _Server()
    probes = MonitorProbes(plan, parse_trigger(f"tcp:{server.port}"), quiet_s=5.0)
    spawner = subprocess.Popen(
        [str(spawner_path), "-c", SPAWNER, str(child), "100"],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        time.sleep(0.1)
        probes.load()
        assert spawner.stdout.readline() == "done\n"

        server.request()
        state = probes.state()
        window = probes.window(state.epoch, state.current)
    finally:
        os.killpg(spawner.pid, signal.SIGKILL)
        spawner.wait()
        probes.close()
        server.close()
    assert window.values == {"count:slt-spawn": 1, "count:slt-nap": 100}
