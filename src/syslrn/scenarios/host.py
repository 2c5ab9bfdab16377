"""Host-level pieces that scenarios share: service users, shared directories,
tmpfs mounts and process lookups in /proc.

Scenarios run their servers as root but hand requests to unprivileged users
(a delivery helper, an ssh session). These helpers create what those users
need and find the processes a scenario started, so that tear-down stops
exactly those and no other process on the host.
"""

from __future__ import annotations

import errno
import logging
import os
import pwd
import re
import signal
import socket
import struct
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

from syslrn.scenarios.support import ScenarioError

log = logging.getLogger(__name__)

#: Environment variable that tags every process of one scenario instance.
INSTANCE_ENV = "SYSLRN_INSTANCE"


def ensure_system_user(
    name: str, home: str | os.PathLike, shell: str
) -> pwd.struct_passwd:
    """Create a system user with its own group unless it exists, and return it.

    The password field is ``*`` (no password) rather than useradd's ``!``,
    because sshd without PAM refuses every login to an account whose
    password field starts with ``!``, key logins included.
    """
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    if os.geteuid() != 0:
        raise ScenarioError(f"user {name} does not exist and creating it needs root")

    log.info("creating system user %s (home %s)", name, home)
    run_command(
        [
            "useradd",
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            os.fspath(home),
            "--shell",
            shell,
            name,
        ]
    )
    run_command(["usermod", "--password", "*", name])
    return pwd.getpwnam(name)


def shared_dir_path(prefix: str, parent: str | os.PathLike | None = None) -> Path:
    """Return a new path for :func:`create_shared_dir`, without creating it.

    Scenarios name their files before set-up, because a campaign asks for
    the trigger, the faults and the logs before it starts the servers.
    """
    return Path(parent or tempfile.gettempdir()) / f"{prefix}{uuid.uuid4().hex[:12]}"


def create_shared_dir(path: Path) -> Path:
    """Create ``path``, mode 0711, as :func:`make_shared_dir` does."""
    path.mkdir(mode=0o711)
    path.chmod(0o711)
    return path


def make_shared_dir(prefix: str, parent: str | os.PathLike | None = None) -> Path:
    """Create a fresh directory, mode 0711, that unprivileged users can traverse.

    Scenario work directories often sit below directories that only root can
    enter (pytest's and the campaign's are mode 0700), so files that a
    service user must reach live here instead.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    path.chmod(0o711)
    return path


def chown(path: str | os.PathLike, user: pwd.struct_passwd, mode: int) -> None:
    """Give ``path`` to ``user`` and its primary group with ``mode``."""
    os.chown(path, user.pw_uid, user.pw_gid)
    os.chmod(path, mode)


def mount_tmpfs(
    path: str | os.PathLike, size: str, *, uid: int = 0, gid: int = 0, mode: int = 0o755
) -> None:
    """Mount a tmpfs of ``size`` (mount's syntax: ``64k``, ``8m``) on ``path``."""
    options = f"size={size},uid={uid},gid={gid},mode={mode:o},nodev,nosuid"
    run_command(["mount", "-t", "tmpfs", "-o", options, "syslrn", os.fspath(path)])


def unmount(path: str | os.PathLike) -> None:
    """Unmount ``path``, or detach it lazily when a process has a file open on it."""
    result = subprocess.run(
        ["umount", os.fspath(path)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        log.warning(
            "umount %s failed (%s), so it is detached lazily",
            path,
            result.stderr.strip(),
        )
        run_command(["umount", "--lazy", os.fspath(path)])


def mount_points_under(path: str | os.PathLike) -> list[Path]:
    """Return the mount points at or below ``path``, deepest first."""
    root = os.path.realpath(path)
    found = []
    with open("/proc/self/mounts") as mounts:
        for line in mounts:
            # Spaces and other bytes in mount points are octal escapes.
            point = line.split()[1].encode().decode("unicode_escape")
            if point == root or point.startswith(root + "/"):
                found.append(Path(point))
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def fill_filesystem(directory: str | os.PathLike) -> Path:
    """Write zeros to a file in ``directory`` until its file system is full.

    tmpfs allocates whole pages, so once a write fails with ENOSPC no file
    on it can grow by a single byte.
    """
    filler = Path(directory) / ".filler"
    block = bytes(64 * 1024)
    with open(filler, "wb", buffering=0) as out:
        # Bounded: the tmpfs mounts this is meant for hold a few pages.
        for _ in range(1 << 14):
            try:
                out.write(block)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                return filler
    raise ScenarioError(f"{directory} did not fill up after 1 GiB of writes")


def child_pids(pid: int) -> list[int]:
    """Return the PIDs of the direct children of process ``pid``."""
    children: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return children
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                children.extend(int(child) for child in f.read().split())
        except OSError:
            continue
    return children


def descendant_pids(pid: int) -> list[int]:
    """Return the PIDs of the children of ``pid``, their children, and so on."""
    found: list[int] = []
    seen: set[int] = set()
    pending = child_pids(pid)
    # Bounded by the PID space: each PID is visited once.
    while pending:
        child = pending.pop()
        if child in seen:
            continue
        seen.add(child)
        found.append(child)
        pending.extend(child_pids(child))
    return found


def process_comm(pid: int) -> str | None:
    """Return the kernel name (comm) of ``pid``, or None once it has exited."""
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return None


def process_uid(pid: int) -> int | None:
    """Return the real user id of ``pid``, or None once it has exited."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Uid:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def is_alive(pid: int) -> bool:
    """Return whether ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    # The state follows the parenthesised comm, which may contain spaces.
    return stat[stat.rindex(")") + 2] != "Z"


def instance_processes(instance: str, uid: int | None = None) -> list[int]:
    """Return the live processes whose environment tags them with ``instance``.

    A scenario starts its server with ``SYSLRN_INSTANCE=<instance>`` in the
    environment, and the children inherit it, including helpers that
    detached into their own session or were re-parented to init. So this
    finds them where a walk down the process tree would not. It misses
    processes that overwrite their environment, as sshd does with its
    process titles. ``uid`` keeps only processes of that real user.
    """
    tag = f"{INSTANCE_ENV}={instance}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        pid = int(entry)
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                environ = f.read()
        except OSError:
            continue
        if tag not in environ.split(b"\0"):
            continue
        if uid is not None and process_uid(pid) != uid:
            continue
        if is_alive(pid):
            found.append(pid)
    return found


def kill_processes(pids: Iterable[int], sig: int = signal.SIGKILL) -> int:
    """Send ``sig`` to each of ``pids`` and return how many were still there."""
    sent = 0
    for pid in pids:
        try:
            os.kill(pid, sig)
            sent += 1
        except ProcessLookupError:
            continue
    return sent


def kill_instance(
    instance: str, uid: int | None = None, *, grace: float = 0.0, timeout: float = 5.0
) -> None:
    """Kill every process tagged with ``instance`` and wait until they are gone.

    Processes get ``grace`` seconds to exit on their own first, for example
    the daemons of a server whose master process was just sent SIGTERM.
    """
    if grace > 0:
        deadline = time.monotonic() + grace
        while instance_processes(instance, uid) and time.monotonic() < deadline:
            time.sleep(0.05)

    deadline = time.monotonic() + timeout
    while True:
        pids = instance_processes(instance, uid)
        if not pids:
            return
        if time.monotonic() > deadline:
            raise ScenarioError(
                f"processes {pids} of instance {instance} survived SIGKILL for "
                f"{timeout:.0f} s"
            )
        log.info("killing processes %s of instance %s", pids, instance)
        kill_processes(pids)
        time.sleep(0.05)


def listening(port: int, host: str = "127.0.0.1") -> bool:
    """Return whether a TCP socket listens on ``host:port``, read from /proc/net/tcp.

    Unlike a test connect, this reaches no server, so it counts as no
    request at the scenario's trigger and leaves no line in its log.
    """
    wanted = f"{_proc_net_addr(host)}:{port:04X}"
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            # State 0A is TCP_LISTEN.
            if fields[1] == wanted and fields[3] == "0A":
                return True
    return False


def wait_for_listen(
    port: int,
    host: str = "127.0.0.1",
    timeout: float = 30.0,
    alive: Callable[[], bool] | None = None,
) -> None:
    """Wait until a socket listens on ``host:port``.

    ``alive`` reports whether the server is still running, so that a server
    that exits during start-up fails fast instead of at the timeout.
    """

    def ready() -> bool:
        if alive is not None and not alive():
            raise ScenarioError(f"the server for {host}:{port} exited during start-up")
        return listening(port, host)

    wait_until(ready, timeout, f"a listening socket on {host}:{port}")


def wait_until(
    predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.05
) -> None:
    """Poll ``predicate`` until it is true, or raise naming ``what`` at ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise ScenarioError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def count_lines(path: str | os.PathLike, pattern: str) -> int:
    """Return how many lines of the text file ``path`` match ``pattern``."""
    regex = re.compile(pattern)
    try:
        with open(path, errors="replace") as f:
            return sum(1 for line in f if regex.search(line))
    except FileNotFoundError:
        return 0


def _proc_net_addr(host: str) -> str:
    # /proc/net/tcp prints the network-order 32-bit address as a native
    # integer in hex.
    return f"{struct.unpack('=I', socket.inet_aton(host))[0]:08X}"


def run_command(argv: list[str]) -> None:
    """Run a set-up command, and raise with its output when it fails."""
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ScenarioError(
            f"{' '.join(argv)} failed (exit {result.returncode}): "
            f"{result.stderr.strip() or result.stdout.strip()}"
        )
