"""OpenSSH: a private sshd on loopback that runs a command per session.

The scenario runs its own sshd (``sshd -D -f CONFIG -E LOG``) with host
keys, configuration and log in the work directory. It listens on 127.0.0.1
on a free port and lets one user, ``syslrn-ssh``, log in with a key pair
that the scenario generates. Each request is one ssh session that runs a
small task. The listener forks a privileged monitor per connection. The
monitor forks an unprivileged child for the protocol before
authentication, and then the session child, which runs the user's shell.
The shell runs the task, a script that counts the entries of ``/``
through a scratch file with ls, wc, cat and rm.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from syslrn.scenarios import host
from syslrn.scenarios.base import Fault, LogSource, Scenario, WorkloadResult
from syslrn.scenarios.faults import (
    ChangeMode,
    DropReplies,
    FullFilesystem,
    FunctionFault,
    KillProcesses,
    LowerProcessLimit,
    ReplaceFile,
)
from syslrn.scenarios.support import (
    ScenarioError,
    ensure_packages,
    free_tcp_port,
    require_binary,
    start_process,
    stop_process,
)
from syslrn.text import format_count

log = logging.getLogger(__name__)

#: The user whose sessions the workload opens.
SSH_USER = "syslrn-ssh"
#: Its home. Instance directories go below it: sshd's StrictModes accepts an
#: authorized_keys file only if every directory above it up to the home
#: belongs to root or the user and is writable by no one else, which rules
#: out the world-writable /tmp.
SSH_HOME = Path("/var/lib/syslrn-ssh")
#: Privilege separation directory that sshd chroots its unprivileged child to.
PRIVSEP_DIR = Path("/run/sshd")

SSHD = "/usr/sbin/sshd"

TASK_SCRIPT = """\
#!/bin/sh
# The session's work: count the entries of / through a scratch file and
# print the request token with the count.
set -e
out="{scratch}/count.$$"
ls / | wc -l > "$out"
echo "$1 $(cat "$out")"
rm -f "$out"
"""

FAILING_SCRIPT = """\
#!/bin/sh
# A broken deployment of the session's program.
echo "session-task: cannot load its configuration" >&2
exit 1
"""

HANGING_SCRIPT = """\
#!/bin/sh
# A session program stuck on a lock or a dead network mount.
exec sleep 600
"""

# A typo that makes sshd exit when it rereads its configuration.
_TYPO = "PubkeyAuthentcation yes\n"
# The line sshd logs when a session has ended.
_DISCONNECT_LINE = r"^Disconnected from user "
#: How long a workload waits, at most, for sshd to log its sessions' ends.
DISCONNECT_WAIT_S = 5.0


@dataclass
class _Session:
    token: str
    error: str | None = None


class SshScenario(Scenario):
    """A private OpenSSH server on loopback that runs a task per session.

    Parameters
    ----------
    workdir : path
        Directory for the keys, the configuration and the logs. It is
        created if missing.
    timeout : float, default=30
        Seconds a workload waits for its sessions. The clients of sessions
        still running then are killed, and those sessions count as errors.
    parallel : int, default=16
        Maximum number of ssh sessions open at once.

    Notes
    -----
    Needs root, to run sshd and to create the ``syslrn-ssh`` user with its
    home ``/var/lib/syslrn-ssh``. Each instance keeps the files that user
    must reach (authorized_keys, the task, a scratch directory) in its own
    directory below that home.
    """

    name = "ssh"
    packages = ("openssh-server", "openssh-client")

    def __init__(self, workdir: Path, *, timeout: float = 30.0, parallel: int = 16):
        super().__init__(workdir)
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        if parallel < 1:
            raise ValueError(f"parallel must be at least 1, got {parallel}")
        self.timeout = float(timeout)
        self.parallel = int(parallel)
        self.instance = f"ssh-{uuid.uuid4().hex[:12]}"
        self.config_path = self.workdir / "sshd_config"
        self.sshd_log = self.workdir / "sshd.log"
        self.host_key = self.workdir / "ssh_host_ed25519_key"
        self.client_key = self.workdir / "client_ed25519"
        self.known_hosts = self.workdir / "known_hosts"
        # Chosen now, made in setup(): a campaign records the start-up, so it
        # needs the trigger and the log paths before the servers exist.
        self.port = free_tcp_port()
        self.shared_dir = host.shared_dir_path("instance-", SSH_HOME)
        self._sshd: subprocess.Popen | None = None
        self._user = None
        self._batches = 0
        self._faults: dict[str, Fault] | None = None

    # -- the Scenario interface ---------------------------------------------

    @property
    def trigger(self) -> str:
        return f"tcp:{self.port}"

    @property
    def task_path(self) -> Path:
        return self._shared("bin") / "session-task"

    @property
    def scratch(self) -> Path:
        return self._shared("scratch")

    @property
    def authorized_keys(self) -> Path:
        return self._shared("authorized_keys")

    @property
    def sshd_pid(self) -> int:
        """PID of the listening sshd."""
        if self._sshd is None or self._sshd.poll() is not None:
            raise ScenarioError("the sshd listener is not running")
        return self._sshd.pid

    def setup(self) -> None:
        ensure_packages(self.packages)
        self._ssh = require_binary("ssh")
        self._keygen = require_binary("ssh-keygen")
        if not os.access(SSHD, os.X_OK):
            raise ScenarioError(f"{SSHD} not found; install openssh-server")
        self._user = host.ensure_system_user(SSH_USER, SSH_HOME, "/bin/sh")

        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self._write_files()
            self._start_sshd()
        except BaseException:
            self.teardown()
            raise
        log.info("sshd instance %s listens on 127.0.0.1:%d", self.instance, self.port)

    def check(self) -> None:
        result = self.run_workload(1)
        if result.errors:
            raise ScenarioError(
                f"sshd on port {self.port} failed a test session: "
                f"{'; '.join(result.messages)}"
            )

    def run_workload(self, n: int) -> WorkloadResult:
        if n < 0:
            raise ValueError(f"n must be non-negative, got {n}")
        start = time.monotonic()
        deadline = start + self.timeout
        self._batches += 1
        tokens = [f"{self.instance}.{self._batches}.{i}" for i in range(n)]
        disconnects = host.count_lines(self.sshd_log, _DISCONNECT_LINE)

        sessions: list[_Session] = []
        if n:
            with ThreadPoolExecutor(max_workers=min(n, self.parallel)) as pool:
                sessions = list(pool.map(lambda t: self._session(t, deadline), tokens))

        errors = [f"{s.token}: {s.error}" for s in sessions if s.error]
        self._wait_for_disconnects(
            disconnects + n - len(errors),
            min(deadline, time.monotonic() + DISCONNECT_WAIT_S),
        )
        duration = time.monotonic() - start
        log.info(
            "ssh workload: %s, %s, %.2f s",
            format_count(n, "session"),
            format_count(len(errors), "error"),
            duration,
        )
        return WorkloadResult(
            requests=n, errors=len(errors), messages=errors[:10], duration_s=duration
        )

    def _wait_for_disconnects(self, expected: int, deadline: float) -> None:
        """Wait until sshd has logged the end of each session that succeeded.

        sshd writes "Disconnected from user" after the client has exited, so
        without the wait a run's log can miss its last sessions' ends. A
        fault may keep a session from logging it, so the wait ends without
        an error at ``deadline``. ``expected`` counts the log's lines.
        """
        while (found := host.count_lines(self.sshd_log, _DISCONNECT_LINE)) < expected:
            if time.monotonic() > deadline:
                log.debug("sshd log has %d of %d session ends", found, expected)
                return
            time.sleep(0.05)

    def faults(self) -> dict[str, Fault]:
        if self._faults is None:
            self._faults = {fault.name: fault for fault in self._make_faults()}
        return self._faults

    def logs(self) -> list[LogSource]:
        # sshd writes no pid into a -E log, so a session's lines are tied
        # by the client's port: "Accepted publickey for syslrn-ssh from
        # 127.0.0.1 port 40312 ssh2". The listener's own port is excluded.
        return [
            LogSource(
                "sshd", self.sshd_log, rf"127\.0\.0\.1 port (?!{self.port}\b)(\d+)"
            )
        ]

    def reset(self) -> None:
        for fault in self.faults().values():
            fault.revert()
        host.kill_instance(self.instance, uid=self._user.pw_uid)
        if self._sshd is None or self._sshd.poll() is not None:
            log.warning("sshd exited; starting it again")
            self._start_sshd()
        for path in self.scratch.iterdir():
            path.unlink()
        self.task_path.write_text(TASK_SCRIPT.format(scratch=self.scratch))

    def teardown(self) -> None:
        if self._faults is not None:
            for fault in self._faults.values():
                try:
                    fault.revert()
                except (OSError, ScenarioError) as exc:
                    log.warning("reverting fault %s failed: %s", fault.name, exc)
        self._stop_sshd()
        host.kill_instance(self.instance)
        if self.shared_dir.exists():
            for mount in host.mount_points_under(self.shared_dir):
                host.unmount(mount)
            shutil.rmtree(self.shared_dir, ignore_errors=True)
        # The log stays for the campaign to collect, but keys and
        # configuration go.
        for path in (
            self.host_key,
            self.host_key.with_suffix(".pub"),
            self.client_key,
            self.client_key.with_suffix(".pub"),
            self.known_hosts,
            self.config_path,
        ):
            path.unlink(missing_ok=True)

    # -- set-up ---------------------------------------------------------------

    def _shared(self, name: str) -> Path:
        return self.shared_dir / name

    def _write_files(self) -> None:
        # sshd's StrictModes checks the home and everything below it.
        SSH_HOME.mkdir(mode=0o755, exist_ok=True)
        os.chown(SSH_HOME, 0, 0)
        SSH_HOME.chmod(0o755)
        PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)

        host.create_shared_dir(self.shared_dir)
        (self.shared_dir / "bin").mkdir(mode=0o755)
        self.scratch.mkdir()
        host.chown(self.scratch, self._user, 0o700)
        self.task_path.write_text(TASK_SCRIPT.format(scratch=self.scratch))
        self.task_path.chmod(0o755)

        for key in (self.host_key, self.client_key):
            key.unlink(missing_ok=True)
            key.with_suffix(".pub").unlink(missing_ok=True)
            host.run_command(
                [
                    self._keygen,
                    "-q",
                    "-t",
                    "ed25519",
                    "-N",
                    "",
                    "-C",
                    self.instance,
                    "-f",
                    str(key),
                ]
            )
        public_key = self.client_key.with_suffix(".pub").read_text().strip()
        # "restrict" turns off forwarding and ptys, as for an automation key.
        self.authorized_keys.write_text(f"restrict {public_key}\n")
        self.authorized_keys.chmod(0o644)
        key_type, key_data = self.host_key.with_suffix(".pub").read_text().split()[:2]
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {key_type} {key_data}\n")
        self.config_path.write_text(self._sshd_config())
        host.run_command([SSHD, "-t", "-f", str(self.config_path)])

    def _sshd_config(self) -> str:
        return "\n".join(
            [
                f"Port {self.port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {self.host_key}",
                "PidFile none",
                f"AuthorizedKeysFile {self.authorized_keys}",
                "AuthenticationMethods publickey",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                "PermitRootLogin no",
                f"AllowUsers {SSH_USER}",
                "StrictModes yes",
                "LoginGraceTime 30",
                # The default 10:30:100 drops connections at random once ten
                # are unauthenticated, which a burst of sessions reaches.
                "MaxStartups 200",
                "X11Forwarding no",
                "AllowTcpForwarding no",
                "AllowAgentForwarding no",
                "PermitTTY no",
                "PermitUserRC no",
                "PrintMotd no",
                "PrintLastLog no",
                "LogLevel VERBOSE",
                # Session processes get the instance tag. sshd's own processes
                # overwrite their environment with their process titles.
                f"SetEnv {host.INSTANCE_ENV}={self.instance}",
                "",
            ]
        )

    def _start_sshd(self) -> None:
        env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            host.INSTANCE_ENV: self.instance,
        }
        # sshd re-executes itself on SIGHUP, so it needs its absolute path.
        self._sshd = start_process(
            [SSHD, "-D", "-f", str(self.config_path), "-E", str(self.sshd_log)],
            self.workdir / "sshd.out",
            env=env,
            cwd="/",
        )
        host.wait_for_listen(self.port, alive=lambda: self._sshd.poll() is None)

    def _stop_sshd(self) -> None:
        """Stop the listener and every session it forked.

        Session processes run in sessions of their own and outlive a
        stopped listener, so they are killed first, while the process tree
        still shows them as its descendants.
        """
        if self._sshd is None:
            return
        if self._sshd.poll() is None:
            # A session forked between two passes is caught by the next.
            for _ in range(3):
                if not host.kill_processes(host.descendant_pids(self._sshd.pid)):
                    break
                time.sleep(0.05)
        stop_process(self._sshd)
        self._sshd = None

    def _reload(self) -> None:
        """Send SIGHUP and wait until sshd listens again with the new configuration."""
        pattern = r"^Server listening on "
        before = host.count_lines(self.sshd_log, pattern)
        os.kill(self.sshd_pid, signal.SIGHUP)
        host.wait_until(
            lambda: host.count_lines(self.sshd_log, pattern) > before,
            10.0,
            "sshd to listen again after SIGHUP",
        )

    # -- workload -------------------------------------------------------------

    def _session(self, token: str, deadline: float) -> _Session:
        """Open one ssh session that runs the task and check its output.

        The session may last until ``deadline``, and at least one second so
        that every request of a workload is issued.
        """
        limit = max(1.0, deadline - time.monotonic())
        argv = [
            self._ssh,
            "-F",
            "/dev/null",
            "-T",
            "-p",
            str(self.port),
            "-i",
            str(self.client_key),
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "CheckHostIP=no",
            "-o",
            "UpdateHostKeys=no",
            "-o",
            f"ConnectTimeout={int(limit) + 1}",
            "-o",
            "LogLevel=ERROR",
            f"{SSH_USER}@127.0.0.1",
            str(self.task_path),
            token,
        ]
        session = _Session(token)
        try:
            result = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                check=False,
                stdin=subprocess.DEVNULL,
                timeout=limit,
            )
        except subprocess.TimeoutExpired:
            session.error = f"session timed out after {limit:.0f} s"
            return session
        if result.returncode != 0:
            reason = result.stderr.strip().splitlines()
            session.error = (
                f"exit status {result.returncode}: "
                f"{reason[-1] if reason else 'no message'}"
            )
        elif not re.fullmatch(rf"{re.escape(token)} \d+", result.stdout.strip()):
            session.error = f"unexpected output {result.stdout.strip()[:80]!r}"
        return session

    # -- faults ---------------------------------------------------------------

    def _make_faults(self) -> list[Fault]:
        kill_sessions = {
            "after_revert": lambda: host.kill_instance(
                self.instance, uid=self._user.pw_uid
            )
        }

        def restrict_algorithms() -> None:
            with open(self.config_path, "a") as config:
                config.write("PubkeyAcceptedAlgorithms rsa-sha2-512,rsa-sha2-256\n")

        def add_typo() -> None:
            with open(self.config_path, "a") as config:
                config.write(_TYPO)

        def restore_config() -> None:
            self.config_path.write_text(self._sshd_config())

        def reload_until_exit() -> None:
            os.kill(self.sshd_pid, signal.SIGHUP)
            host.wait_until(
                lambda: self._sshd.poll() is not None,
                10.0,
                "sshd to exit on its invalid configuration",
            )

        def restart() -> None:
            self._stop_sshd()
            self._start_sshd()

        return [
            ReplaceFile(
                "command-fails",
                "the session's program exits with status 1 and an error message",
                self.task_path,
                FAILING_SCRIPT,
            ),
            ReplaceFile(
                "command-hangs",
                "the session's program never returns, so sessions time out",
                self.task_path,
                HANGING_SCRIPT,
                **kill_sessions,
            ),
            KillProcesses(
                "session-killed",
                "every process that the sshd listener forks for a connection "
                "is killed as it appears, so sessions drop",
                lambda: self.sshd_pid,
                **kill_sessions,
            ),
            FullFilesystem(
                "scratch-full",
                "the file system of the scratch directory is full, so the "
                "task cannot write its file",
                self.scratch,
            ),
            ChangeMode(
                "keys-permission",
                "authorized_keys is world-writable (mode 0666), so StrictModes "
                "refuses the key",
                self.authorized_keys,
                mode=0o666,
            ),
            FunctionFault(
                "key-algorithms",
                "PubkeyAcceptedAlgorithms is restricted to RSA on reload, which "
                "locks out the user's Ed25519 key",
                restrict_algorithms,
                restore_config,
                after_apply=self._reload,
                after_revert=self._reload,
            ),
            FunctionFault(
                "config-typo",
                "sshd is sent SIGHUP after a typo in sshd_config and exits, so "
                "connections are refused",
                add_typo,
                restore_config,
                after_apply=reload_until_exit,
                after_revert=restart,
            ),
            DropReplies(
                "replies-dropped",
                "sshd's replies to clients are dropped on loopback after the handshake, so sessions time out",
                lambda: self.port,
            ),
            LowerProcessLimit(
                "process-limit",
                "RLIMIT_NPROC of sshd is 1, so the session cannot fork the "
                "user's shell",
                lambda: [self.sshd_pid],
                nproc=1,
            ),
        ]
