"""Generic fault injectors and host helpers, on real files, mounts and processes."""

from __future__ import annotations

import errno
import os
import resource
import socket
import subprocess
import sys
import time

import pytest

from syslrn.scenarios import host, scenario_class
from syslrn.scenarios.faults import (
    ChangeMode,
    DropReplies,
    FullFilesystem,
    KillProcesses,
    LowerProcessLimit,
    ReplaceFile,
)
from syslrn.scenarios.support import ScenarioError

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


@pytest.fixture
def sleeper():
    procs = []

    def start(argv=("sleep", "30"), env=None):
        proc = subprocess.Popen(list(argv), env=env)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def test_get_scenario_rejects_unknown_name():
    with pytest.raises(ScenarioError, match="unknown scenario 'nope'"):
        scenario_class("nope")


def test_replace_file_restores_contents_and_mode(tmp_path):
    path = tmp_path / "helper"
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o750)
    fault = ReplaceFile("broken", "a broken helper", path, "#!/bin/sh\nexit 1\n")

    fault.apply()
    replaced = path.read_text()
    mode_while_applied = path.stat().st_mode & 0o777
    fault.revert()
    fault.revert()

    assert replaced == "#!/bin/sh\nexit 1\n"
    assert mode_while_applied == 0o750
    assert path.read_text() == "#!/bin/sh\nexit 0\n"
    assert path.stat().st_mode & 0o777 == 0o750


def test_change_mode_restores_mode(tmp_path):
    path = tmp_path / "keys"
    path.write_text("key\n")
    path.chmod(0o600)
    fault = ChangeMode("open", "world-writable", path, mode=0o666)

    fault.apply()
    applied = path.stat().st_mode & 0o777
    fault.revert()

    assert applied == 0o666
    assert path.stat().st_mode & 0o777 == 0o600


@needs_root
def test_full_filesystem_rejects_writes_until_reverted(tmp_path):
    box = tmp_path / "box"
    box.mkdir(mode=0o750)
    (box / "kept").write_text("before\n")
    fault = FullFilesystem("full", "no space", box, subdirs=("new",))

    fault.apply()
    try:
        assert (box / "new").is_dir()
        assert not (box / "kept").exists()
        fd = os.open(box / "new" / "message", os.O_CREAT | os.O_WRONLY, 0o600)
        try:
            with pytest.raises(OSError) as raised:
                os.write(fd, b"x")
        finally:
            os.close(fd)
    finally:
        fault.revert()

    assert raised.value.errno == errno.ENOSPC
    assert host.mount_points_under(box) == []
    assert (box / "kept").read_text() == "before\n"


def test_kill_processes_kills_matching_children(sleeper):
    loop = sleeper(["sh", "-c", "while true; do sleep 0.05; done"])
    fault = KillProcesses(
        "killed", "sleeps are killed", lambda: loop.pid, comms={"sleep"}
    )

    fault.apply()
    host.wait_until(lambda: fault.killed >= 3, 10.0, "three killed sleeps")
    fault.revert()
    killed = fault.killed
    time.sleep(0.2)

    assert loop.poll() is None
    assert fault.killed == killed


def test_lower_process_limit_restores_soft_limit(sleeper):
    proc = sleeper()
    soft, hard = resource.prlimit(proc.pid, resource.RLIMIT_NPROC)
    fault = LowerProcessLimit("nproc", "one process", lambda: [proc.pid], nproc=1)

    fault.apply()
    lowered = resource.prlimit(proc.pid, resource.RLIMIT_NPROC)
    fault.revert()

    assert lowered == (1, hard)
    assert resource.prlimit(proc.pid, resource.RLIMIT_NPROC) == (soft, hard)


def test_kill_instance_finds_tagged_processes(sleeper):
    instance = f"test-{os.getpid()}"
    env = dict(os.environ, **{host.INSTANCE_ENV: instance})
    tagged = sleeper(env=env)
    untagged = sleeper()
    host.wait_until(lambda: host.instance_processes(instance), 5.0, "the tagged sleep")

    found = host.instance_processes(instance)
    host.kill_instance(instance)
    tagged.wait(timeout=5)

    assert found == [tagged.pid]
    assert tagged.returncode == -9
    assert untagged.poll() is None


def test_listening_sees_bound_socket():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        port = server.getsockname()[1]
        before_listen = host.listening(port)
        server.listen()
        while_listening = host.listening(port)

    assert not before_listen
    assert while_listening
    assert not host.listening(port)


def test_descendant_pids_walks_the_tree(sleeper):
    shell = sleeper(
        [sys.executable, "-c", "import subprocess; subprocess.run(['sleep', '30'])"]
    )
    host.wait_until(lambda: host.child_pids(shell.pid), 10.0, "the grandchild")

    grandchildren = host.child_pids(shell.pid)
    descendants = host.descendant_pids(os.getpid())
    host.kill_processes(grandchildren)

    assert shell.pid in descendants
    assert set(grandchildren) <= set(descendants)


@pytest.mark.parametrize("name", ["postgres", "postfix", "ssh"])
def test_scenario_names_files_before_setup(tmp_path, name):
    # A campaign asks for these before it starts the servers, to record the
    # start-up; none may need setup() first.
    scenario = scenario_class(name)(tmp_path / "work")
    trigger = scenario.trigger
    assert trigger.startswith(("tcp:", "unix:"))
    assert scenario.trigger == trigger
    assert [source.component for source in scenario.logs()]
    assert scenario.faults()
    assert not (tmp_path / "work").exists() or name == "postgres"


def test_drop_replies_times_out_client_then_reverts():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    port = server.getsockname()[1]
    fault = DropReplies("replies-dropped", "test", lambda: port)

    def exchange():
        client = socket.create_connection(("127.0.0.1", port), timeout=2)
        conn, _ = server.accept()
        conn.sendall(b"220 ready\r\n")
        client.settimeout(1.0)
        try:
            return client.recv(64)
        finally:
            client.close()
            conn.close()

    try:
        assert exchange() == b"220 ready\r\n"
        fault.apply()
        # The handshake completes, so the server accepts; the reply is lost.
        with pytest.raises(TimeoutError):
            exchange()
    finally:
        fault.revert()
    assert exchange() == b"220 ready\r\n"
    server.close()
