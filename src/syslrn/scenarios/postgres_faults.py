"""Faults of the PostgreSQL scenario.

Each fault acts only on the scenario's own cluster, files and mount, and
makes the sessions of a workload fail in its own way. The catalogue has a
backend terminated or killed while it serves a session, a full or
unreadable tablespace, a COPY helper that fails or hangs, an
authentication or connection-limit misconfiguration, and a process-count
limit on the postmaster.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from syslrn.scenarios.base import Fault
from syslrn.scenarios.support import ScenarioError, signal_child, user_credentials

if TYPE_CHECKING:
    from syslrn.scenarios.postgres import PostgresScenario

log = logging.getLogger(__name__)

#: How often the backend watchdog looks for new client backends, in seconds.
#: Sessions take tens of milliseconds, so a few milliseconds catch them all.
WATCH_INTERVAL_S = 0.005


class PostgresFault(Fault):
    """A fault of :class:`PostgresScenario`. Reverting an unapplied one does nothing."""

    def __init__(self, scenario: PostgresScenario):
        self.scenario = scenario
        self.applied = False

    def apply(self) -> None:
        if self.applied:
            raise ScenarioError(
                f"fault {self.name} is already applied; revert it first"
            )
        self._apply()
        self.applied = True
        log.info("applied fault %s", self.name)

    def revert(self) -> None:
        if not self.applied:
            return
        self._revert()
        self.applied = False
        log.info("reverted fault %s", self.name)

    def _apply(self) -> None:
        raise NotImplementedError

    def _revert(self) -> None:
        raise NotImplementedError


class BackendSignalled(PostgresFault):
    """A watchdog that signals client backends while they serve sessions.

    A thread of the calling process polls the postmaster's children and
    signals each new client backend through a pidfd, so that a PID reused by
    another process between the listing and the signal is never hit.
    """

    def __init__(
        self,
        scenario: PostgresScenario,
        name: str,
        description: str,
        sig: signal.Signals,
        max_signalled: int | None = None,
    ):
        super().__init__(scenario)
        self.name = name
        self.description = description
        self.signal = sig
        self.max_signalled = max_signalled
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.signalled: list[int] = []

    def _apply(self) -> None:
        self.signalled = []
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._watch,
            args=(self.scenario.server_pid,),
            name=f"fault-{self.name}",
            daemon=True,
        )
        self._thread.start()

    def _revert(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        log.info("fault %s signalled backends %s", self.name, self.signalled)

    def _watch(self, postmaster: int) -> None:
        seen: set[int] = set()
        while not self._stop.wait(WATCH_INTERVAL_S):
            for pid in self.scenario.client_backends():
                if self._done():
                    return
                if pid in seen:
                    continue
                seen.add(pid)
                if signal_child(pid, postmaster, self.signal):
                    self.signalled.append(pid)

    def _done(self) -> bool:
        limit = self.max_signalled
        return limit is not None and len(self.signalled) >= limit


class TablespaceFull(PostgresFault):
    """Another file takes all the free space of the tablespace's tmpfs."""

    name = "disk-full"
    description = "the tablespace's file system has no free space"

    def _filler(self) -> Path:
        return self.scenario.spool_dir / "filler"

    def _apply(self) -> None:
        stats = os.statvfs(self.scenario.spool_dir)
        free = stats.f_bavail * stats.f_frsize
        fd = os.open(self._filler(), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            # fallocate allocates tmpfs pages without writing them.
            os.posix_fallocate(fd, 0, free)
        finally:
            os.close(fd)

    def _revert(self) -> None:
        self._filler().unlink(missing_ok=True)


class TablespaceUnreadable(PostgresFault):
    """The tablespace's version directory loses its permissions (mode 000)."""

    name = "tablespace-permission"
    description = "the server user may not enter the tablespace directory"

    def _target(self) -> Path:
        found = sorted(self.scenario.spool_dir.glob("PG_*"))
        if not found:
            raise ScenarioError(
                f"no PG_* directory in tablespace {self.scenario.spool_dir}; "
                "set the scenario up first"
            )
        return found[0]

    def _apply(self) -> None:
        self._target().chmod(0o000)

    def _revert(self) -> None:
        self._target().chmod(0o700)


class HelperReplaced(PostgresFault):
    """The COPY helper program is replaced by a broken one."""

    def __init__(
        self, scenario: PostgresScenario, name: str, description: str, script: str
    ):
        super().__init__(scenario)
        self.name = name
        self.description = description
        self.script = script

    def _apply(self) -> None:
        self.scenario.write_helper(self.script)

    def _revert(self) -> None:
        self.scenario.write_helper()


class PasswordRequired(PostgresFault):
    """pg_hba.conf requires a password that the workload role does not have."""

    name = "auth-misconfigured"
    description = "pg_hba.conf requires a password the clients do not have"

    def _apply(self) -> None:
        role = self.scenario.role
        self.scenario.write_hba(f"local   all       {role}   scram-sha-256\n")
        self.scenario.reload_config()

    def _revert(self) -> None:
        self.scenario.write_hba()
        self.scenario.reload_config()


class ConnectionLimit(PostgresFault):
    """The workload role may hold one connection at a time.

    Only concurrent sessions fail, so a workload of one session does not
    see this fault.
    """

    name = "connection-limit"
    description = "the workload role's connection limit is 1"

    def _apply(self) -> None:
        self.scenario.admin(f"ALTER ROLE {self.scenario.role} CONNECTION LIMIT 1")

    def _revert(self) -> None:
        self.scenario.admin(f"ALTER ROLE {self.scenario.role} CONNECTION LIMIT -1")


class ProcessLimit(PostgresFault):
    """RLIMIT_NPROC of the postmaster drops to 1, so it can fork no backend.

    The limit counts every process of the server user, so a limit of one
    fails every fork whatever else that user runs. prlimit runs as the
    server user: changing another user's limits needs CAP_SYS_RESOURCE,
    which a container can drop even for root, while prlimit(2) lets a
    process change the limits of one whose user and group IDs equal its own.
    """

    name = "process-limit"
    description = "the postmaster's process-count limit (RLIMIT_NPROC) is 1"

    def __init__(self, scenario: PostgresScenario):
        super().__init__(scenario)
        self._saved: tuple[int, str] | None = None

    def _apply(self) -> None:
        pid = self.scenario.server_pid
        soft = _soft_nproc(pid)
        self._set_soft_nproc(pid, "1")
        self._saved = (pid, soft)

    def _revert(self) -> None:
        if self._saved is None:
            return
        pid, soft = self._saved
        self._saved = None
        if self.scenario.server_pid != pid:
            log.info("postmaster pid %d is gone; no limit to restore", pid)
            return
        self._set_soft_nproc(pid, soft)

    def _set_soft_nproc(self, pid: int, soft: str) -> None:
        # "SOFT:" changes the soft limit and keeps the hard one.
        result = subprocess.run(
            ["prlimit", f"--pid={pid}", f"--nproc={soft}:"],
            capture_output=True,
            text=True,
            check=False,
            **user_credentials(self.scenario.server_user),
        )
        if result.returncode != 0:
            raise ScenarioError(
                f"prlimit failed to set RLIMIT_NPROC={soft} on pid {pid}: "
                f"{result.stderr.strip()}"
            )


def _soft_nproc(pid: int) -> str:
    """Return the soft RLIMIT_NPROC of ``pid`` as prlimit takes it back."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max processes"):
            return line.split()[2]
    raise ScenarioError(f"/proc/{pid}/limits has no 'Max processes' line")


FAILING_HELPER = """\
#!/bin/sh
echo "make-rows: source unavailable" >&2
exit 1
"""

# statement_timeout cancels the COPY long before the sleep ends, and the
# cancel signals the backend's process group, so the sleep ends with it.
HANGING_HELPER = """\
#!/bin/sh
exec sleep 30
"""


def make_faults(scenario: PostgresScenario) -> dict[str, Fault]:
    """Return the fault catalogue of ``scenario``, by name."""
    faults: list[Fault] = [
        BackendSignalled(
            scenario,
            "backend-terminated",
            "every client backend gets SIGTERM while it serves its session",
            signal.SIGTERM,
        ),
        BackendSignalled(
            scenario,
            "backend-killed",
            "one client backend gets SIGKILL, so the postmaster resets the cluster",
            signal.SIGKILL,
            max_signalled=1,
        ),
        TablespaceFull(scenario),
        TablespaceUnreadable(scenario),
        HelperReplaced(
            scenario,
            "helper-fails",
            "the COPY helper exits with status 1",
            FAILING_HELPER,
        ),
        HelperReplaced(
            scenario,
            "helper-hangs",
            "the COPY helper hangs until statement_timeout cancels the session",
            HANGING_HELPER,
        ),
        PasswordRequired(scenario),
        ConnectionLimit(scenario),
        ProcessLimit(scenario),
    ]
    return {fault.name: fault for fault in faults}
