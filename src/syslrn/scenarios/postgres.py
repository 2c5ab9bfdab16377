"""PostgreSQL 15 as a scenario: one backend process per client session.

:meth:`PostgresScenario.setup` creates a cluster with initdb in the work
directory and starts the server as user ``postgres``, listening on a unix
socket in that directory and on no TCP port. One request is one client
session: a ``psql`` process that loads rows through a helper program
(``COPY ... FROM PROGRAM``, so the server forks a shell and the helper for
each session), inserts them into a table in a tablespace on a small tmpfs,
and reads their count and sum back.

Work directory layout::

    data/          the cluster (owner postgres, mode 0700)
    run/           the unix socket .s.PGSQL.5432 and its lock file
    spool/         tmpfs mount that holds the tablespace "spool"
    bin/make-rows  the helper that COPY runs
    session.sql    the script that each psql session runs
    postgres.log   the server's log (stderr of the postmaster and backends)

The scenario needs root: it mounts the tmpfs and starts the server as user
``postgres``, because the server refuses to run as root.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import signal
import stat
import subprocess
import time
import uuid
from pathlib import Path

from syslrn.scenarios.base import Fault, LogSource, Scenario, WorkloadResult
from syslrn.scenarios.postgres_faults import make_faults
from syslrn.scenarios.support import (
    ScenarioError,
    child_pids,
    ensure_packages,
    start_process,
    stop_process,
    user_credentials,
)
from syslrn.text import format_count

log = logging.getLogger(__name__)

PG_MAJOR = 15
BINDIR = Path(f"/usr/lib/postgresql/{PG_MAJOR}/bin")
SERVER_USER = "postgres"
# The port only names the socket file: the server opens no TCP socket, so
# clusters of several scenarios never compete for it.
PORT = 5432
DATABASE = "syslrn"
ROLE = "app"
TABLESPACE = "spool"

#: Rows that each session loads, about 110 bytes each: 200 rows fill several
#: heap pages, so every session extends the table in the tablespace.
ROWS_PER_SESSION = 200
SPOOL_SIZE = "32m"
#: statement_timeout of the workload role, in seconds. Sessions take tens of
#: milliseconds, so only a hanging helper reaches it, and its session fails.
STATEMENT_TIMEOUT_S = 3
#: Time after which the driver kills a psql session and counts it failed.
SESSION_TIMEOUT_S = 30.0
READY_TIMEOUT_S = 30.0
#: Maximum length of a unix socket path: sun_path is 108 bytes with its NUL.
MAX_SOCKET_PATH = 107

# log_line_prefix: time, [pid], and %c, the session id that PostgreSQL
# builds from the process's start time and pid ("6b12c421.1b2d"). %q ends
# the prefix for background processes, which have no user or database.
LOG_LINE_PREFIX = "%m [%p] %c %q%u@%d "
SESSION_REGEX = r"^\S+ \S+ \S+ \[\d+\] ([0-9a-f]+\.[0-9a-f]+) "
LOG_MASKS = (
    (r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)? [A-Z]+", "TIME"),
    (r"(?<=\[)\d+(?=\])", "PID"),
    (r"\b[0-9a-f]+\.[0-9a-f]+\b", "SESSION"),
    (r"'[^']*'", "STR"),
    (r"(/[\w.+-]+)+", "PATH"),
    (r"\b\d+(\.\d+)?\b", "NUM"),
)

HELPER_SCRIPT = """\
#!/bin/sh
# Print $1 CSV rows "number,payload" for COPY ... FROM PROGRAM.
exec awk -v n="$1" 'BEGIN {
    pad = sprintf("%100s", ""); gsub(/ /, "x", pad)
    for (i = 1; i <= n; i++) printf "%d,%06d%s\\n", i, i, pad
}'
"""

SESSION_SQL = """\
BEGIN;
CREATE TEMP TABLE batch (n integer, payload text) ON COMMIT DROP;
COPY batch FROM PROGRAM :'helper' WITH (FORMAT csv);
INSERT INTO items (session, n, payload) SELECT :'session', n, payload FROM batch;
COMMIT;
SELECT count(*), sum(n) FROM items WHERE session = :'session';
"""

EXPECTED_OUTPUT = f"{ROWS_PER_SESSION}|{ROWS_PER_SESSION * (ROWS_PER_SESSION + 1) // 2}"

SERVER_CONFIG = """
# Settings of the syslrn scenario.
listen_addresses = ''
port = {port}
unix_socket_directories = '{socket_dir}'
max_connections = 50
shared_buffers = 16MB
# The cluster is thrown away after the campaign, so durability is not
# needed. Without fsync a session still makes the same processes and
# connections.
fsync = off
synchronous_commit = off
full_page_writes = off
# Checkpoints only when asked, so none falls inside a recording by chance.
checkpoint_timeout = 1d
max_wal_size = 1GB
log_destination = 'stderr'
logging_collector = off
log_line_prefix = '{prefix}'
log_timezone = 'UTC'
log_connections = on
log_disconnections = on
log_statement = 'all'
"""

HBA_TRUST = """\
# TYPE  DATABASE  USER  METHOD
local   all       all   trust
"""


class PostgresScenario(Scenario):
    """PostgreSQL 15 on a unix socket, driven by concurrent psql sessions.

    Parameters
    ----------
    workdir : path
        Directory for the cluster, the socket, the tablespace mount and the
        log. It is made traversable by others (mode 0711) so that the server
        user reaches its files; its parents must be traversable too.
    """

    name = "postgres"
    packages = (f"postgresql-{PG_MAJOR}", f"postgresql-client-{PG_MAJOR}")
    #: Role of the workload's sessions.
    role = ROLE
    #: User that the server runs as.
    server_user = SERVER_USER

    def __init__(self, workdir: Path):
        super().__init__(workdir)
        self.data_dir = self.workdir / "data"
        self.socket_dir = self.workdir / "run"
        self.spool_dir = self.workdir / "spool"
        self.bin_dir = self.workdir / "bin"
        self.helper_path = self.bin_dir / "make-rows"
        self.session_script = self.workdir / "session.sql"
        self.log_path = self.workdir / "postgres.log"
        self.socket_path = self.socket_dir / f".s.PGSQL.{PORT}"
        self._server: subprocess.Popen | None = None
        self._mounted = False
        self._faults = make_faults(self)

    # -- interface -------------------------------------------------------

    @property
    def trigger(self) -> str:
        return f"unix:{self.socket_path}"

    def setup(self) -> None:
        if self._server is not None:
            raise ScenarioError(
                f"postgres scenario in {self.workdir} is already set up; "
                "tear it down first"
            )
        ensure_packages(self.packages)
        if os.geteuid() != 0:
            raise ScenarioError(
                "the postgres scenario needs root: it mounts a tmpfs and starts "
                f"the server as user {SERVER_USER}; run syslrn as root"
            )
        self._check_workdir()
        try:
            self._make_dirs()
            self._initdb()
            self._write_config()
            self._start_server()
            self._create_schema()
        except BaseException:
            # Leave no half-set-up server or mount behind.
            self.teardown()
            raise
        log.info("postgres scenario ready on %s", self.socket_path)

    def check(self) -> None:
        server = self._require_server()
        if server.poll() is not None:
            raise ScenarioError(
                f"postmaster pid {server.pid} exited with status "
                f"{server.returncode}; see {self.log_path}"
            )
        self.wait_ready()
        if not os.path.ismount(self.spool_dir):
            raise ScenarioError(f"tablespace mount {self.spool_dir} is gone")
        result = self.run_workload(1)
        if result.errors:
            raise ScenarioError(f"check session failed: {result.messages[0]}")

    def run_workload(self, n: int) -> WorkloadResult:
        """Run ``n`` psql sessions at once and wait for all of them.

        A session counts as an error when psql exits non-zero, prints a
        result other than the count and sum of the rows it loaded, or outlives
        :data:`SESSION_TIMEOUT_S`. The call returns once the psql processes
        and their server backends have exited.
        """
        if n < 0:
            raise ScenarioError(f"workload size {n} is negative; give n >= 0")
        self._require_server()
        started = time.monotonic()
        sessions = [self._start_session() for _ in range(n)]

        errors = 0
        messages: list[str] = []
        deadline = started + SESSION_TIMEOUT_S
        try:
            for session_id, proc in sessions:
                message = _finish_session(session_id, proc, deadline)
                if message is not None:
                    errors += 1
                    if len(messages) < 5:
                        messages.append(message)
        finally:
            # Interrupted (Ctrl-C): leave no psql running.
            for _, proc in sessions:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()

        self._wait_sessions_closed()
        duration = time.monotonic() - started
        if errors:
            log.info(
                "%d of %s failed: %s", errors, format_count(n, "session"), messages[0]
            )
        return WorkloadResult(
            requests=n, errors=errors, messages=messages, duration_s=duration
        )

    def faults(self) -> dict[str, Fault]:
        return dict(self._faults)

    def logs(self) -> list[LogSource]:
        return [
            LogSource(
                component="postgres",
                path=self.log_path,
                session_regex=SESSION_REGEX,
                masks=LOG_MASKS,
            )
        ]

    def reset(self) -> None:
        self._revert_faults()
        server = self._require_server()
        if server.poll() is not None:
            log.warning(
                "postmaster pid %d exited with status %s; starting it again",
                server.pid,
                server.returncode,
            )
            self._start_server()
        self.wait_ready()
        self.admin("TRUNCATE items", database=DATABASE)

    def teardown(self) -> None:
        self._revert_faults()
        self._stop_server()
        if self._mounted:
            _unmount(self.spool_dir)
            self._mounted = False
        for path in (self.data_dir, self.socket_dir, self.spool_dir, self.bin_dir):
            shutil.rmtree(path, ignore_errors=True)
        for path in (self.session_script, self.log_path):
            path.unlink(missing_ok=True)

    # -- what the faults use ---------------------------------------------

    @property
    def server_pid(self) -> int:
        """PID of the postmaster."""
        return self._require_server().pid

    def admin(self, *statements: str, database: str = "postgres") -> str:
        """Run SQL statements as the superuser, each in its own transaction."""
        argv = [*self._psql_argv(SERVER_USER, database)]
        for statement in statements:
            argv += ["-c", statement]
        try:
            result = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                env=_client_env(),
                timeout=READY_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise ScenarioError(
                f"psql timed out after {READY_TIMEOUT_S:.0f} s running {statements[0]!r}"
            ) from None
        if result.returncode != 0:
            raise ScenarioError(
                f"admin SQL failed ({_last_error(result.stderr)}) in: "
                + "; ".join(statements)
            )
        return result.stdout

    def client_backends(self) -> list[int]:
        """Return the PIDs of the backends that serve client sessions.

        A backend names its client in its process title, here always
        ``[local]`` since the server listens on a unix socket only.
        Background processes (checkpointer, walwriter...) do not.
        """
        backends = []
        for pid in child_pids(self.server_pid):
            try:
                title = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"[local]" in title:
                backends.append(pid)
        return backends

    def reload_config(self) -> None:
        """Make the postmaster read its configuration files again, and wait."""
        offset = self.log_path.stat().st_size
        os.kill(self.server_pid, signal.SIGHUP)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            with open(self.log_path, "rb") as handle:
                handle.seek(offset)
                if b"received SIGHUP, reloading configuration files" in handle.read():
                    return
            time.sleep(0.02)
        raise ScenarioError(
            f"postmaster pid {self.server_pid} did not log a configuration reload "
            f"within {READY_TIMEOUT_S:.0f} s; see {self.log_path}"
        )

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Wait until the postmaster accepts sessions.

        First waits for the status line of ``postmaster.pid`` to read
        "ready", then for pg_isready to succeed. The second step is needed
        after a backend crash: the status line can still read "ready" while
        the server resets, recovers and rejects sessions.
        """
        server = self._require_server()
        deadline = time.monotonic() + timeout
        while not self._pid_file_ready(server):
            self._check_alive(server, deadline, timeout)
            time.sleep(0.05)
        probe = [
            str(BINDIR / "pg_isready"),
            "-q",
            "-t",
            "2",
            "-h",
            str(self.socket_dir),
            "-p",
            str(PORT),
            "-U",
            SERVER_USER,
        ]
        while subprocess.run(probe, env=_client_env(), check=False).returncode != 0:
            self._check_alive(server, deadline, timeout)
            time.sleep(0.05)

    def _pid_file_ready(self, server: subprocess.Popen) -> bool:
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        # Line 1 is the pid, line 8 the status (starting, ready, stopping).
        return (
            len(lines) >= 8
            and lines[0].strip() == str(server.pid)
            and lines[7].strip() == "ready"
            and self.socket_path.exists()
        )

    def _check_alive(
        self, server: subprocess.Popen, deadline: float, timeout: float
    ) -> None:
        if server.poll() is not None:
            raise ScenarioError(
                f"postmaster exited with status {server.returncode} before it "
                f"accepted sessions; see {self.log_path}"
            )
        if time.monotonic() > deadline:
            raise ScenarioError(
                f"postmaster pid {server.pid} not ready after {timeout:.0f} s; "
                f"see {self.log_path}"
            )

    # -- set-up steps ------------------------------------------------------

    def _check_workdir(self) -> None:
        """Raise unless the work directory can take a new cluster.

        Runs before anything is created, so that a failure here leaves the
        directory's existing contents alone.
        """
        if len(str(self.socket_path)) > MAX_SOCKET_PATH:
            raise ScenarioError(
                f"workdir {self.workdir}: socket path {self.socket_path} is longer "
                f"than {MAX_SOCKET_PATH} bytes; choose a shorter workdir"
            )
        for path in (self.data_dir, self.socket_dir, self.spool_dir, self.bin_dir):
            if path.exists():
                raise ScenarioError(
                    f"workdir {self.workdir} already contains {path.name}/; "
                    "tear the scenario down first or choose an empty workdir"
                )
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.workdir.chmod(0o711)
        _check_reachable(self.workdir, pwd.getpwnam(SERVER_USER))

    def _make_dirs(self) -> None:
        server = pwd.getpwnam(SERVER_USER)
        for path in (self.data_dir, self.socket_dir, self.spool_dir):
            path.mkdir(mode=0o700)
            os.chown(path, server.pw_uid, server.pw_gid)
        options = f"size={SPOOL_SIZE},mode=0700,uid={server.pw_uid},gid={server.pw_gid}"
        result = subprocess.run(
            [
                "mount",
                "-t",
                "tmpfs",
                "-o",
                options,
                "syslrn-spool",
                str(self.spool_dir),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise ScenarioError(
                f"mounting a tmpfs on {self.spool_dir} failed: {result.stderr.strip()}"
            )
        self._mounted = True

        self.bin_dir.mkdir(mode=0o755)
        self.bin_dir.chmod(0o755)
        self.write_helper()
        self.session_script.write_text(SESSION_SQL)
        self.log_path.touch(mode=0o600)

    def write_helper(self, text: str = HELPER_SCRIPT) -> None:
        """Replace the COPY helper atomically, so no session runs half a file.

        Without ``text``, writes the working helper.
        """
        staged = self.helper_path.with_name(self.helper_path.name + ".new")
        staged.write_text(text)
        staged.chmod(0o755)
        os.replace(staged, self.helper_path)

    def _initdb(self) -> None:
        argv = [
            str(BINDIR / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            SERVER_USER,
            "--auth=trust",
            "--no-locale",
            "-E",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        ]
        result = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            check=False,
            cwd=self.data_dir,
            **user_credentials(SERVER_USER),
        )
        if result.returncode != 0:
            raise ScenarioError(f"initdb failed: {_last_error(result.stderr)}")

    def _write_config(self) -> None:
        config = SERVER_CONFIG.format(
            port=PORT, socket_dir=self.socket_dir, prefix=LOG_LINE_PREFIX
        )
        with open(self.data_dir / "postgresql.conf", "a") as handle:
            handle.write(config)
        self.write_hba()

    def write_hba(self, first_rules: str = "") -> None:
        """Write pg_hba.conf: ``first_rules``, then trust for every local user.

        The first matching rule wins, so ``first_rules`` shadow the trust
        rule. :meth:`reload_config` makes the file take effect.
        """
        path = self.data_dir / "pg_hba.conf"
        path.write_text(first_rules + HBA_TRUST)
        server = pwd.getpwnam(SERVER_USER)
        os.chown(path, server.pw_uid, server.pw_gid)

    def _start_server(self) -> None:
        self._server = start_process(
            [str(BINDIR / "postgres"), "-D", str(self.data_dir)],
            self.log_path,
            cwd=self.data_dir,
            user=SERVER_USER,
        )
        self.wait_ready()

    def _create_schema(self) -> None:
        self.admin(
            f"CREATE ROLE {ROLE} LOGIN",
            f"ALTER ROLE {ROLE} SET statement_timeout = '{STATEMENT_TIMEOUT_S}s'",
            # COPY FROM PROGRAM needs this role, or superuser.
            f"GRANT pg_execute_server_program TO {ROLE}",
            f"CREATE TABLESPACE {TABLESPACE} OWNER {ROLE} LOCATION '{self.spool_dir}'",
            f"CREATE DATABASE {DATABASE} OWNER {ROLE}",
        )
        self.admin(
            f"SET ROLE {ROLE}",
            "CREATE TABLE items (session text NOT NULL, n integer NOT NULL, "
            f"payload text NOT NULL) TABLESPACE {TABLESPACE}",
            "CREATE INDEX items_session ON items (session)",
            database=DATABASE,
        )

    # -- sessions and shutdown -----------------------------------------------

    def _psql_argv(self, user: str, database: str) -> list[str]:
        return [
            str(BINDIR / "psql"),
            "-X",
            "-q",
            "-A",
            "-t",
            "-w",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            str(self.socket_dir),
            "-p",
            str(PORT),
            "-U",
            user,
            "-d",
            database,
        ]

    def _start_session(self) -> tuple[str, subprocess.Popen]:
        session_id = uuid.uuid4().hex[:12]
        argv = [
            *self._psql_argv(ROLE, DATABASE),
            "-v",
            f"session={session_id}",
            "-v",
            f"helper={self.helper_path} {ROWS_PER_SESSION}",
            "-f",
            str(self.session_script),
        ]
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env=_client_env(),
        )
        return session_id, proc

    def _wait_sessions_closed(self, timeout: float = 10.0) -> None:
        # psql exits as soon as it has read the result. The backend writes
        # its disconnection line and exits a moment later.
        deadline = time.monotonic() + timeout
        while self._server is not None and self._server.poll() is None:
            backends = self.client_backends()
            if not backends:
                return
            if time.monotonic() > deadline:
                log.warning(
                    "client backends %s still running %.0f s after their sessions",
                    backends,
                    timeout,
                )
                return
            time.sleep(0.01)

    def _require_server(self) -> subprocess.Popen:
        if self._server is None:
            raise ScenarioError("postgres scenario is not set up; call setup() first")
        return self._server

    def _revert_faults(self) -> None:
        for fault in self._faults.values():
            try:
                fault.revert()
            except (OSError, ScenarioError) as exc:
                log.error("reverting fault %s failed: %s", fault.name, exc)

    def _stop_server(self) -> None:
        server = self._server
        if server is None:
            return
        if server.poll() is None:
            # SIGINT is PostgreSQL's fast shutdown: it ends the sessions,
            # writes a checkpoint and stops the background processes.
            os.kill(server.pid, signal.SIGINT)
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                log.warning("postmaster pid %d ignored SIGINT", server.pid)
        # For a postmaster that ignored SIGINT: SIGTERM, then SIGKILL, to its
        # process group. Backends have process groups of their own, and a
        # hanging COPY helper ends at the backend's statement_timeout.
        stop_process(server)
        self._server = None


def _client_env() -> dict[str, str]:
    # No PGPASSWORD, PGSERVICE or PGHOST of the caller: the sessions must
    # depend on the scenario only. psql's -X skips the caller's psqlrc.
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "PGCONNECT_TIMEOUT": "10",
    }


def _finish_session(
    session_id: str, proc: subprocess.Popen, deadline: float
) -> str | None:
    """Wait for one psql session; return its error message, or None if it succeeded."""
    try:
        stdout, stderr = proc.communicate(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return f"session {session_id} timed out after {SESSION_TIMEOUT_S:.0f} s"
    if proc.returncode != 0:
        return _last_error(stderr) or f"psql exited with status {proc.returncode}"
    if stdout.strip() != EXPECTED_OUTPUT:
        return (
            f"session {session_id} read back {stdout.strip()!r}, "
            f"expected {EXPECTED_OUTPUT!r}"
        )
    return None


def _last_error(stderr: str) -> str:
    """Return the first error line of psql's or initdb's output, else its last line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in lines:
        if "ERROR:" in line or "FATAL:" in line or "error:" in line:
            return line
    return lines[-1] if lines else ""


def _check_reachable(path: Path, user: pwd.struct_passwd) -> None:
    """Raise unless ``user`` may traverse ``path`` and each of its parents."""
    path = path.resolve()
    groups = {user.pw_gid}
    for directory in (path, *path.parents):
        st = directory.stat()
        if st.st_uid == user.pw_uid:
            allowed = st.st_mode & stat.S_IXUSR
        elif st.st_gid in groups:
            allowed = st.st_mode & stat.S_IXGRP
        else:
            allowed = st.st_mode & stat.S_IXOTH
        if not allowed:
            raise ScenarioError(
                f"workdir {path}: user {user.pw_name} cannot traverse {directory} "
                f"(mode {stat.filemode(st.st_mode)}); choose a workdir under "
                "a world-traversable directory such as the system temp directory"
            )


def _unmount(path: Path) -> None:
    result = subprocess.run(["umount", str(path)], capture_output=True, check=False)
    if result.returncode != 0:
        # Busy (a straggler still has a file open): detach it now, the
        # kernel frees it when the last user is gone.
        log.warning("umount %s failed, detaching it lazily", path)
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)
