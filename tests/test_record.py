"""The recorder against the running kernel: real eBPF, real processes."""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow.compute as pc
import pytest

from syslrn.collect.recorder import Recorder
from syslrn.trace import journal_path, read_trace, recover
from syslrn.trace.schema import FLAG_DRIVER

pytestmark = pytest.mark.bpf

PYTHON = sys.executable
SYSLRN = [PYTHON, "-m", "syslrn"]


def rows(trace, kind=None, pid=None, driver=False):
    """Rows of a kind; with driver=True only the test's own process tree,
    because the recording covers the whole host and others use it too."""
    table = trace.table
    if driver:
        flags = pc.bit_wise_and(table["flags"], FLAG_DRIVER)
        table = table.filter(pc.not_equal(flags, 0))
    if kind is not None:
        table = table.filter(pc.equal(table["kind"].cast("string"), kind))
    if pid is not None:
        table = table.filter(pc.equal(table["pid"], pid))
    return table.to_pylist()


def record(path: Path, action, trigger=None):
    """Record while action() runs; return the trace and action's result."""
    with Recorder(path, trigger=trigger) as recorder:
        result = action()
        time.sleep(0.2)
    del recorder
    return read_trace(path), result


def test_shell_children_counts_and_parents(trace_path):
    n = 5
    script = f"for i in $(seq {n}); do /bin/true; done; /bin/echo done >/dev/null"

    def action():
        proc = subprocess.run(["/bin/sh", "-c", script], check=True)
        return proc

    trace, _ = record(trace_path, action)
    execs = rows(trace, "exec", driver=True)
    shell = [e for e in execs if e["filename"] == "/bin/sh"]
    assert len(shell) == 1
    shell_pid = shell[0]["pid"]
    trues = [e for e in execs if e["filename"] == "/bin/true"]
    assert len(trues) == n
    echoes = [e for e in execs if e["filename"] == "/bin/echo"]
    assert len(echoes) == 1

    forks = {f["pid"]: f for f in rows(trace, "fork")}
    for child in trues + echoes:
        fork = forks[child["pid"]]
        assert fork["ppid"] == shell_pid
        assert fork["parent_start_ns"] == shell[0]["start_ns"]
        assert fork["start_ns"] == child["start_ns"]
        assert fork["flags"] & FLAG_DRIVER
    exits = {e["pid"] for e in rows(trace, "exit")}
    assert {c["pid"] for c in trues} <= exits


def test_recorder_leaves_itself_out(trace_path):
    trace, _ = record(trace_path, lambda: subprocess.run(["/bin/true"], check=True))
    assert rows(trace, pid=os.getpid()) == []
    assert trace.meta["recorder_pid"] == os.getpid()


def test_recorder_stores_wall_clock(trace_path):
    before = time.time_ns()
    trace, _ = record(trace_path, lambda: subprocess.run(["/bin/true"], check=True))
    after = time.time_ns()

    assert before <= trace.meta["started_unix_ns"]
    assert trace.meta["started_unix_ns"] <= trace.meta["stopped_unix_ns"]
    assert trace.meta["stopped_unix_ns"] <= after


def test_snapshot_has_processes_alive_before(trace_path):
    sleeper = subprocess.Popen(["/bin/sleep", "30"])
    try:
        time.sleep(0.1)
        trace, _ = record(trace_path, lambda: None)
    finally:
        sleeper.kill()
        sleeper.wait()
    snap = rows(trace, "snapshot", pid=sleeper.pid)
    assert len(snap) == 1
    assert snap[0]["comm"] == "sleep"
    assert snap[0]["ppid"] == os.getpid()
    # The snapshot's start time has the events' resolution: the exit row
    # of the same instance, recorded elsewhere, would carry the same one.
    init = rows(trace, "snapshot", pid=1)
    assert len(init) == 1
    assert init[0]["ppid"] == 0


THREADS = textwrap.dedent(
    """
    import threading, time
    threads = [threading.Thread(target=time.sleep, args=(0.05,)) for _ in range(6)]
    for t in threads: t.start()
    for t in threads: t.join()
    """
)


def test_threads_are_not_processes(trace_path):
    def action():
        return subprocess.run([PYTHON, "-c", THREADS], check=True)

    trace, _ = record(trace_path, action)
    forks = rows(trace, "fork", driver=True)
    python_forks = [f for f in forks if f["ppid"] == os.getpid()]
    assert len(python_forks) == 1
    child = python_forks[0]["pid"]
    assert [f for f in forks if f["ppid"] == child] == []
    assert len(rows(trace, "exit", pid=child)) == 1


REUSE = textwrap.dedent(
    """
    import os, sys
    for attempt in range(200):
        first = os.fork()
        if first == 0:
            os._exit(0)
        os.waitpid(first, 0)
        with open("/proc/sys/kernel/ns_last_pid", "w") as f:
            f.write(str(first - 1))
        second = os.fork()
        if second == 0:
            os._exit(0)
        os.waitpid(second, 0)
        if second == first:
            print(first)
            sys.exit(0)
    sys.exit(1)
    """
)


def test_reused_pid_gives_two_instances(trace_path):
    def action():
        out = subprocess.run([PYTHON, "-c", REUSE], capture_output=True, text=True)
        return out

    trace, out = record(trace_path, action)
    if out.returncode != 0:
        pytest.skip("could not get the same pid twice through ns_last_pid")
    pid = int(out.stdout)
    forks = rows(trace, "fork", pid=pid)
    assert len(forks) >= 2
    starts = {f["start_ns"] for f in forks}
    assert len(starts) == len(forks)
    assert len(rows(trace, "exit", pid=pid)) == len(forks)


TCP_SERVER = textwrap.dedent(
    """
    import socket, sys
    family = socket.AF_INET6 if sys.argv[1] == "6" else socket.AF_INET
    host = "::1" if sys.argv[1] == "6" else "127.0.0.1"
    srv = socket.socket(family, socket.SOCK_STREAM)
    srv.bind((host, 0)); srv.listen(16)
    print(srv.getsockname()[1], flush=True)
    for _ in range(int(sys.argv[2])):
        conn, _ = srv.accept(); conn.recv(1); conn.close()
    """
)
TCP_CLIENT = textwrap.dedent(
    """
    import socket, sys
    family = socket.AF_INET6 if sys.argv[1] == "6" else socket.AF_INET
    host = "::1" if sys.argv[1] == "6" else "127.0.0.1"
    c = socket.socket(family, socket.SOCK_STREAM)
    c.connect((host, int(sys.argv[2]))); c.sendall(b"x"); c.close()
    """
)


def _tcp_exchange(version: str, connections: int):
    server = subprocess.Popen(
        [PYTHON, "-c", TCP_SERVER, version, str(connections)],
        stdout=subprocess.PIPE,
        text=True,
    )
    port = int(server.stdout.readline())
    clients = []
    for _ in range(connections):
        client = subprocess.run([PYTHON, "-c", TCP_CLIENT, version, str(port)])
        clients.append(client.args and client)
    server.wait(timeout=10)
    return server, port


@pytest.mark.parametrize("version", ["4", "6"])
def test_tcp_ends_match_processes(trace_path, version):
    holder = {}

    def action():
        holder["server"], holder["port"] = _tcp_exchange(version, 1)

    trace, _ = record(trace_path, action, trigger=None)
    server, port = holder["server"], holder["port"]
    accepts = [a for a in rows(trace, "accept") if a["lport"] == port]
    assert len(accepts) == 1
    accept = accepts[0]
    assert accept["pid"] == server.pid
    connects = [c for c in rows(trace, "connect", driver=True) if c["rport"] == port]
    assert len(connects) == 1
    connect = connects[0]
    expected_family = "inet6" if version == "6" else "inet"
    assert accept["family"] == connect["family"] == expected_family
    loopback = "::1" if version == "6" else "127.0.0.1"
    assert connect["raddr"] == accept["laddr"] == loopback
    assert (connect["laddr"], connect["lport"]) == (accept["raddr"], accept["rport"])
    assert connect["netns"] == accept["netns"]
    forks = {f["pid"]: f for f in rows(trace, "fork")}
    assert connect["pid"] in forks
    assert connect["pid"] != server.pid


def test_tcp_trigger_counts_requests(trace_path):
    holder = {}
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    srv.close()

    def action():
        # The server must own the port before the trigger is set, so the
        # recording starts with a fixed port the server binds to.
        server = subprocess.Popen(
            [
                PYTHON,
                "-c",
                TCP_SERVER.replace("(host, 0)", f"(host, {port})"),
                "4",
                "3",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert int(server.stdout.readline()) == port
        for _ in range(3):
            subprocess.run([PYTHON, "-c", TCP_CLIENT, "4", str(port)], check=True)
        server.wait(timeout=10)
        holder["server"] = server

    trace, _ = record(trace_path, action, trigger=f"tcp:{port}")
    assert trace.meta["requests"] == 3
    assert trace.requests == 3
    requests = rows(trace, "request")
    assert len(requests) == 3
    assert {r["pid"] for r in requests} == {holder["server"].pid}


UNIX_SERVER = textwrap.dedent(
    """
    import socket, sys
    address = sys.argv[1]
    if address.startswith("@"):
        address = chr(0) + address[1:]
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(address); srv.listen(4)
    print("ready", flush=True)
    for _ in range(int(sys.argv[2])):
        conn, _ = srv.accept(); conn.recv(1); conn.close()
    """
)
UNIX_CLIENT = textwrap.dedent(
    """
    import socket, sys
    address = sys.argv[1]
    if address.startswith("@"):
        address = chr(0) + address[1:]
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.connect(address); c.sendall(b"x"); c.close()
    """
)


@pytest.mark.parametrize("name", ["path", "abstract"])
def test_unix_ends_paired(tmp_path, trace_path, name):
    address = str(tmp_path / "srv.sock") if name == "path" else f"@syslrn-{os.getpid()}"
    shown = address
    holder = {}

    def action():
        server = subprocess.Popen(
            [PYTHON, "-c", UNIX_SERVER, address, "2"], stdout=subprocess.PIPE, text=True
        )
        assert server.stdout.readline().strip() == "ready"
        clients = [
            subprocess.Popen([PYTHON, "-c", UNIX_CLIENT, address]) for _ in range(2)
        ]
        for client in clients:
            assert client.wait(timeout=10) == 0
        server.wait(timeout=10)
        holder.update(server=server, clients=clients)

    trace, _ = record(trace_path, action, trigger=f"unix:{shown}")
    server, clients = holder["server"], holder["clients"]
    accepts = [a for a in rows(trace, "accept") if a["path"] == shown]
    connects = [c for c in rows(trace, "connect") if c["path"] == shown]
    assert len(accepts) == 2
    assert len(connects) == 2
    assert {a["pid"] for a in accepts} == {server.pid}
    assert {c["pid"] for c in connects} == {c.pid for c in clients}
    for accept in accepts:
        # The kernel reuses a closed socket's memory, so two connections in
        # a row can show the same ids; the connect just before the accept
        # is the one it pairs with.
        candidates = [
            c
            for c in connects
            if c["sock_id"] == accept["peer_id"] and c["ts_ns"] <= accept["ts_ns"]
        ]
        assert candidates
        connect = max(candidates, key=lambda c: c["ts_ns"])
        assert connect["peer_id"] == accept["sock_id"]
        assert accept["peer_pid"] == connect["pid"]
        assert connect["peer_pid"] == server.pid
    assert trace.meta["requests"] == 2


def test_sigint_leaves_complete_trace(tmp_path):
    path = tmp_path / "stopped.parquet"
    marker = tmp_path / "started"
    script = f"/bin/true; touch {marker}; exec /bin/sleep 60"
    proc = subprocess.Popen(
        [*SYSLRN, "record", "-o", str(path), "--", "/bin/sh", "-c", script],
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while not marker.exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "the recorded command never started"
        time.sleep(0.05)
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)

    assert path.exists(), stderr
    assert not journal_path(path).exists()
    trace = read_trace(path)
    assert trace.meta["complete"] is True
    assert trace.meta["lost"]["reserve_failed"] == 0
    filenames = [e["filename"] for e in rows(trace, "exec", driver=True)]
    assert "/bin/true" in filenames
    assert "/bin/sleep" in filenames
    assert any(name.endswith("/touch") for name in filenames)


def test_sigint_logged_without_verbose(tmp_path):
    path = tmp_path / "stopped.parquet"
    proc = subprocess.Popen(
        [*SYSLRN, "record", "-o", str(path)], stderr=subprocess.PIPE, text=True
    )
    # The journal appears once the recorder runs, within about a second.
    deadline = time.monotonic() + 30
    while not journal_path(path).exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "the recorder never wrote its journal"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)

    assert proc.returncode == 0, stderr
    assert "stopped by SIGINT" in stderr
    assert read_trace(path).meta["complete"] is True


def test_duration_stops_command(tmp_path):
    path = tmp_path / "timed.parquet"
    result = subprocess.run(
        [*SYSLRN, "record", "-o", str(path), "--duration", "1", "--", "sleep", "60"],
        capture_output=True,
        text=True,
        timeout=50,
    )

    assert result.returncode == 0, result.stderr
    assert "at the end of --duration" in result.stderr
    trace = read_trace(path)
    assert trace.meta["complete"] is True
    # The command was stopped, not left to end by itself.
    assert trace.meta["command_status"] == -signal.SIGTERM


def test_interactive_command_reads_terminal(tmp_path):
    # script(1) runs the recording on a pseudo-terminal of its own, as a
    # login shell would. The command in its own process group must get the
    # terminal, or the kernel stops it at its first read.
    path = tmp_path / "tty.parquet"
    record = [*SYSLRN, "record", "-o", str(path), "--", "head", "-c", "3"]
    result = subprocess.run(
        ["script", "-qec", shlex.join(record), "/dev/null"],
        input="abc\n",
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "recorded" in result.stdout
    trace = read_trace(path)
    assert trace.meta["complete"] is True
    assert trace.meta["command_status"] == 0


def test_sigkill_leaves_readable_journal(tmp_path):
    path = tmp_path / "killed.parquet"
    marker = tmp_path / "started"
    script = f"/bin/true; touch {marker}; exec /bin/sleep 60"
    proc = subprocess.Popen(
        [*SYSLRN, "record", "-o", str(path), "--", "/bin/sh", "-c", script],
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while not marker.exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    # The recorder writes its journal at least once a second.
    time.sleep(1.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()

    assert not path.exists()
    assert journal_path(path).exists()
    interrupted = read_trace(path)
    assert interrupted.meta["complete"] is False
    assert "/bin/true" in [e["filename"] for e in rows(interrupted, "exec")]
    recover(path)
    recovered = read_trace(path)
    assert recovered.table.num_rows == interrupted.table.num_rows
    assert recovered.meta["recovered"] is True


def test_cli_acceptance_three_true(tmp_path):
    path = tmp_path / "t.parquet"
    subprocess.run(
        [
            *SYSLRN,
            "record",
            "-o",
            str(path),
            "--",
            "sh",
            "-c",
            "for i in 1 2 3; do /bin/true; done",
        ],
        check=True,
        capture_output=True,
    )
    out = subprocess.run(
        [*SYSLRN, "trace", "show", str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    line = next(line for line in out.splitlines() if " true " in line)
    assert line.split()[0] == "3"
    assert "(sh x3)" in line
    assert oct(path.stat().st_mode & 0o777) == "0o600"
