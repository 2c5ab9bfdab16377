"""Helpers that scenarios share: packages, server processes, sockets."""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from syslrn.errors import SyslrnError

log = logging.getLogger(__name__)


class ScenarioError(SyslrnError):
    """A scenario failed to set up, run its workload, or tear down."""


def missing_packages(packages: Sequence[str]) -> list[str]:
    """Return the Debian packages of ``packages`` that are not installed."""
    missing = []
    for package in packages:
        result = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", package],
            capture_output=True,
            text=True,
            check=False,
        )
        if "ok installed" not in result.stdout:
            missing.append(package)
    return missing


def ensure_packages(packages: Sequence[str]) -> None:
    """Install the missing Debian packages with apt-get, without starting them.

    The packages' own services stay stopped (a policy-rc.d that denies
    starts is in place during the install): scenarios start their servers
    themselves, in temporary directories, on loopback.
    """
    missing = missing_packages(packages)
    if not missing:
        return
    if os.geteuid() != 0:
        raise ScenarioError(
            f"packages {' '.join(missing)} are missing and installing them needs "
            "root; run as root or install them with apt-get"
        )
    log.info("installing %s", " ".join(missing))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    policy = Path("/usr/sbin/policy-rc.d")
    made_policy = not policy.exists()
    if made_policy:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
            check=True,
            env=env,
        )
    except subprocess.CalledProcessError as exc:
        raise ScenarioError(
            f"apt-get failed to install {' '.join(missing)} (exit {exc.returncode})"
        ) from None
    finally:
        if made_policy:
            policy.unlink(missing_ok=True)


def require_binary(path: str) -> str:
    """Return the full path of an executable, or raise naming the binary."""
    found = shutil.which(path)
    if found is None:
        raise ScenarioError(f"executable {path} not found; run scripts/setup --servers")
    return found


def free_tcp_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on ``host`` at the time of the call."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_for_tcp(port: int, host: str = "127.0.0.1", timeout: float = 30.0) -> None:
    """Wait until a TCP connect to ``host:port`` succeeds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError as exc:
            if time.monotonic() > deadline:
                raise ScenarioError(
                    f"nothing accepts connections on {host}:{port} after "
                    f"{timeout:.0f} s ({exc})"
                ) from None
            time.sleep(0.1)


def wait_for_unix(path: str | os.PathLike, timeout: float = 30.0) -> None:
    """Wait until a unix stream connect to ``path`` succeeds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(1.0)
                sock.connect(os.fspath(path))
                return
        except OSError as exc:
            if time.monotonic() > deadline:
                raise ScenarioError(
                    f"nothing accepts connections on unix socket {path} after "
                    f"{timeout:.0f} s ({exc})"
                ) from None
            time.sleep(0.1)


def user_credentials(user: str | None) -> dict:
    """Return the :class:`subprocess.Popen` arguments that run a child as ``user``.

    The child gets the user's primary group and no supplementary groups;
    with ``user=None`` it keeps the caller's credentials.
    """
    if user is None:
        return {}
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise ScenarioError(
            f"user {user} not found; create it or install its package"
        ) from None
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def start_process(
    argv: Sequence[str],
    log_path: str | os.PathLike,
    *,
    env: dict[str, str] | None = None,
    cwd: str | os.PathLike | None = None,
    user: str | None = None,
) -> subprocess.Popen:
    """Start a server in its own session, its output appended to ``log_path``.

    The own session lets :func:`stop_process` signal the server's whole
    process group, and only that group. With ``user``, the server also
    takes that user's primary group and no supplementary groups, as login
    would give it, instead of keeping the caller's (root's) groups.
    """
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(
            list(argv),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            **user_credentials(user),
            start_new_session=True,
        )
    log.info("started %s as pid %d", argv[0], proc.pid)
    return proc


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Stop a process started by :func:`start_process`, SIGTERM then SIGKILL."""
    if proc.poll() is not None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=timeout)
            log.info("stopped pid %d with %s", proc.pid, sig.name)
            return
        except subprocess.TimeoutExpired:
            log.warning("pid %d ignored %s", proc.pid, sig.name)


def child_pids(pid: int) -> list[int]:
    """Return the PIDs of the children of process ``pid`` (none if it is gone)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    # NOTE: this file lists the children of the main thread only. That is
    # all of them for a single-threaded server such as PostgreSQL 15's
    # postmaster, not for a server that forks from other threads.
    return [int(word) for word in text.split()]


def parent_pid(pid: int) -> int | None:
    """Return the parent PID of process ``pid``, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The comm field is in parentheses and may hold spaces: split after it.
    return int(text.rpartition(")")[2].split()[1])


def signal_child(pid: int, parent: int, sig: int) -> bool:
    """Send ``sig`` to ``pid`` only if it is a child of ``parent``.

    The check and the signal go through a pidfd, so a PID that its process
    released and another process reused in between is never signalled.
    Returns whether the signal was sent.
    """
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    try:
        # The pidfd refers to one process: if the PID still has the right
        # parent after the open, the signal reaches that process or none.
        if parent_pid(pid) != parent:
            return False
        signal.pidfd_send_signal(fd, sig)
        return True
    except ProcessLookupError:
        return False
    finally:
        os.close(fd)
