"""Postfix: a private mail system on loopback whose deliveries run a helper.

The scenario runs its own Postfix instance (``master -c CONFIG``) with its
own configuration and queue directories in the work directory. smtpd
listens on 127.0.0.1 on a free port and accepts mail for ``localhost``
only. Each request is one SMTP session with one message, sent by swaks.
The message crosses smtpd, cleanup, trivial-rewrite, qmgr and local. Then
local pipes it, through the alias ``sink: "|deliver"``, to a shell script
that stores it in a Maildir-style mailbox with date, cat and mv. So every
request spawns helper processes, and its log lines carry the queue id
that Postfix assigned to it.
"""

from __future__ import annotations

import logging
import os
import pwd
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

#: The unprivileged user that local(8) runs the delivery helper as.
MAIL_USER = "syslrn-mail"
RECIPIENT = "sink@localhost"
SENDER = "driver@localhost"

# Header that carries each request's token into the mailbox.
REQUEST_HEADER = "X-Syslrn-Request"

# A sun_path has room for 108 bytes including the terminating NUL, and
# Postfix daemons reach the postlog socket by its full path.
_MAX_SOCKET_PATH = 107

_QUEUED = re.compile(r"queued as ([0-9A-F]{6,})")
_STATUS = re.compile(
    r"\]: (?P<qid>[0-9A-F]{6,}): to=<[^>]*>.*?, "
    r"status=(?P<status>\w+) \((?P<reason>.*)\)$"
)
_TOKEN = re.compile(rf"^{REQUEST_HEADER}: (\S+)", re.MULTILINE)

DELIVER_SCRIPT = """\
#!/bin/sh
# Store one message from standard input in the Maildir-style mailbox: write
# it under tmp/, then rename it into new/, so that readers only ever see
# whole messages. Exit status 75 (EX_TEMPFAIL) makes Postfix defer the
# message and try again later.
mailbox={mailbox}
name="$(date +%s).$$"
cat > "$mailbox/tmp/$name" || exit 75
mv "$mailbox/tmp/$name" "$mailbox/new/$name" || exit 75
"""

FAILING_SCRIPT = """\
#!/bin/sh
# A broken deployment of the delivery program: it exits with EX_SOFTWARE,
# which Postfix treats as a permanent failure and bounces the message.
echo "deliver: mailbox store is out of service" >&2
exit 70
"""

HANGING_SCRIPT = """\
#!/bin/sh
# A delivery program stuck on a lock or a dead network store.
exec sleep 600
"""

MASTER_CF = """\
# service type  private unpriv  chroot  wakeup  maxproc command
{listen} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
proxymap  unix  -       -       n       -       -       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


@dataclass
class _Session:
    """The outcome of one SMTP session as the client saw it."""

    token: str
    queue_id: str | None = None
    error: str | None = None


class PostfixScenario(Scenario):
    """A private Postfix instance on loopback that delivers through a helper.

    Parameters
    ----------
    workdir : path
        Directory for the configuration, the queue and the logs. It is
        created if missing.
    timeout : float, default=30
        Seconds a workload waits for its messages, from its first session
        to the last delivery. Undelivered messages count as errors.
    parallel : int, default=16
        Maximum number of SMTP sessions open at once.
    helper_timeout : float, optional
        Seconds local(8) lets the delivery helper run before it kills it
        and bounces the message (Postfix's ``command_time_limit``). Defaults
        to a third of ``timeout``, so that a hung helper shows in the
        workload's errors, and is at least 2.

    Notes
    -----
    Needs root, to run master(8) and to create the ``syslrn-mail`` user the
    helper runs as. The mailbox and the helper live in a directory under
    the system's temporary directory, because the helper's user must reach
    them and the work directory may sit below private directories.
    """

    name = "postfix"
    packages = ("postfix", "swaks")

    def __init__(
        self,
        workdir: Path,
        *,
        timeout: float = 30.0,
        parallel: int = 16,
        helper_timeout: float | None = None,
    ):
        super().__init__(workdir)
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        if parallel < 1:
            raise ValueError(f"parallel must be at least 1, got {parallel}")
        if helper_timeout is None:
            helper_timeout = timeout / 3
        self.timeout = float(timeout)
        self.parallel = int(parallel)
        self.helper_timeout = max(2, round(helper_timeout))
        self.instance = f"postfix-{uuid.uuid4().hex[:12]}"
        self.config_dir = self.workdir / "config"
        self.queue_dir = self.workdir / "queue"
        self.maillog = self.workdir / "maillog"
        # Chosen now, made in setup(): a campaign records the start-up, so it
        # needs the trigger and the log paths before the servers exist.
        self.port = free_tcp_port()
        self.shared_dir = host.shared_dir_path("syslrn-postfix-")
        self._master: subprocess.Popen | None = None
        self._user = None
        self._batches = 0
        self._faults: dict[str, Fault] | None = None

    # -- the Scenario interface ---------------------------------------------

    @property
    def trigger(self) -> str:
        return f"tcp:{self.port}"

    @property
    def mailbox(self) -> Path:
        return self._shared("mailbox")

    @property
    def deliver_path(self) -> Path:
        return self._shared("bin") / "deliver"

    @property
    def data_dir(self) -> Path:
        return self._shared("data")

    @property
    def master_pid(self) -> int:
        """PID of the running master(8) process."""
        if self._master is None or self._master.poll() is not None:
            raise ScenarioError("the postfix master process is not running")
        return self._master.pid

    def setup(self) -> None:
        ensure_packages(self.packages)
        self._swaks = require_binary("swaks")
        self._daemon_dir = Path(_postconf_default("daemon_directory"))
        self._user = host.ensure_system_user(
            MAIL_USER, "/nonexistent", "/usr/sbin/nologin"
        )

        self.workdir.mkdir(parents=True, exist_ok=True)
        postlog = os.fsencode(self.queue_dir.resolve() / "public" / "postlog")
        if len(postlog) > _MAX_SOCKET_PATH:
            raise ScenarioError(
                f"work directory {self.workdir} is too long: Postfix's socket "
                f"{postlog.decode()} has {len(postlog)} bytes, more than "
                f"{_MAX_SOCKET_PATH}; choose a shorter work directory"
            )
        try:
            self._write_files()
            self._run("postfix", "check")
            self._start_master()
        except BaseException:
            self.teardown()
            raise
        log.info(
            "postfix instance %s listens on 127.0.0.1:%d", self.instance, self.port
        )

    def check(self) -> None:
        result = self.run_workload(1)
        if result.errors:
            raise ScenarioError(
                f"postfix on port {self.port} failed to deliver a test message: "
                f"{'; '.join(result.messages)}"
            )

    def run_workload(self, n: int) -> WorkloadResult:
        if n < 0:
            raise ValueError(f"n must be non-negative, got {n}")
        start = time.monotonic()
        deadline = start + self.timeout
        self._batches += 1
        tokens = [f"{self.instance}.{self._batches}.{i}" for i in range(n)]
        log_offset = _file_size(self.maillog)

        sessions: list[_Session] = []
        if n:
            with ThreadPoolExecutor(max_workers=min(n, self.parallel)) as pool:
                sessions = list(pool.map(lambda t: self._send(t, deadline), tokens))

        errors = self._await_delivery(sessions, log_offset, deadline)
        duration = time.monotonic() - start
        log.info(
            "postfix workload: %s, %s, %.2f s",
            format_count(n, "message"),
            format_count(len(errors), "error"),
            duration,
        )
        return WorkloadResult(
            requests=n, errors=len(errors), messages=errors[:10], duration_s=duration
        )

    def faults(self) -> dict[str, Fault]:
        if self._faults is None:
            self._faults = {fault.name: fault for fault in self._make_faults()}
        return self._faults

    def logs(self) -> list[LogSource]:
        # Every line about one message names its queue id after the
        # process name and pid, e.g. "postfix/qmgr[812]: 4F2A31C0D5: ...".
        return [
            LogSource(
                "postfix", self.maillog, r"postfix/[\w/-]+\[\d+\]: ([0-9A-F]{6,}): "
            )
        ]

    def reset(self) -> None:
        for fault in self.faults().values():
            fault.revert()
        host.kill_instance(self.instance, uid=self._user.pw_uid)
        if self._master is None or self._master.poll() is not None:
            log.warning("postfix master exited; starting it again")
            self._start_master()
        # Deferred messages of a failed run would otherwise be retried, and
        # delivered, during a later one.
        self._run("postsuper", "-d", "ALL")
        for sub in ("tmp", "new"):
            for path in (self.mailbox / sub).iterdir():
                path.unlink()
        self.deliver_path.write_text(DELIVER_SCRIPT.format(mailbox=self.mailbox))

    def teardown(self) -> None:
        if self._faults is not None:
            for fault in self._faults.values():
                try:
                    fault.revert()
                except (OSError, ScenarioError) as exc:
                    log.warning("reverting fault %s failed: %s", fault.name, exc)
        if self._master is not None:
            stop_process(self._master)
            self._master = None
        host.kill_instance(self.instance, grace=2.0)
        if self.shared_dir.exists():
            # A fault left applied by a crash may still have its tmpfs here.
            for mount in host.mount_points_under(self.shared_dir):
                host.unmount(mount)
            shutil.rmtree(self.shared_dir, ignore_errors=True)
        # The logs stay for the campaign to collect, and the rest goes.
        for path in (self.config_dir, self.queue_dir):
            shutil.rmtree(path, ignore_errors=True)

    # -- set-up ---------------------------------------------------------------

    def _shared(self, name: str) -> Path:
        return self.shared_dir / name

    def _write_files(self) -> None:
        user = self._user
        host.create_shared_dir(self.shared_dir)
        (self.shared_dir / "bin").mkdir(mode=0o755)
        self.deliver_path.write_text(DELIVER_SCRIPT.format(mailbox=self.mailbox))
        self.deliver_path.chmod(0o755)
        self.mailbox.mkdir()
        host.chown(self.mailbox, user, 0o700)
        for sub in ("tmp", "new"):
            (self.mailbox / sub).mkdir()
            host.chown(self.mailbox / sub, user, 0o700)

        for path in (self.config_dir, self.queue_dir, self.data_dir):
            path.mkdir(mode=0o755, exist_ok=True)
        # Daemons open files here by absolute path as user postfix, which
        # cannot enter a private work directory.
        os.chown(self.data_dir, pwd.getpwnam("postfix").pw_uid, -1)
        (self.config_dir / "main.cf").write_text(self._main_cf())
        (self.config_dir / "master.cf").write_text(
            MASTER_CF.format(listen=f"127.0.0.1:{self.port}")
        )
        aliases = self.config_dir / "aliases"
        aliases.write_text(
            f'sink: "|{self.deliver_path}"\n'
            # Bounce notices to the driver's address are discarded.
            "driver: /dev/null\n"
            "postmaster: /dev/null\n"
            "mailer-daemon: postmaster\n"
        )
        self._run("postalias", str(aliases))

    def _main_cf(self) -> str:
        config = self.config_dir
        return "\n".join(
            [
                "compatibility_level = 3.6",
                f"queue_directory = {self.queue_dir}",
                f"data_directory = {self.data_dir}",
                "mail_owner = postfix",
                "setgid_group = postdrop",
                # Commands named in root-owned alias files run as this user.
                f"default_privs = {MAIL_USER}",
                f"maillog_file = {self.maillog}",
                f"maillog_file_prefixes = {self.workdir}",
                "myhostname = syslrn.localdomain",
                "mydestination = localhost, $myhostname",
                "inet_interfaces = loopback-only",
                "inet_protocols = ipv4",
                "mynetworks = 127.0.0.0/8",
                "smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination",
                "smtpd_peername_lookup = no",
                f"alias_maps = hash:{config}/aliases",
                f"alias_database = hash:{config}/aliases",
                "local_recipient_maps = $alias_maps",
                # Nothing leaves the host, even if a restriction were loosened.
                "default_transport = error:5.7.1 outbound mail is disabled",
                "relay_transport = error:5.7.1 outbound mail is disabled",
                "message_size_limit = 1048576",
                f"command_time_limit = {self.helper_timeout}s",
                "biff = no",
                # The instance tag reaches every daemon and every helper, so
                # tear-down finds them wherever they were re-parented.
                "import_environment = MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ LANG=C "
                f"POSTLOG_SERVICE POSTLOG_HOSTNAME {host.INSTANCE_ENV}",
                f"export_environment = TZ MAIL_CONFIG LANG {host.INSTANCE_ENV}",
                "",
            ]
        )

    def _start_master(self) -> None:
        env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C",
            host.INSTANCE_ENV: self.instance,
        }
        self._master = start_process(
            [str(self._daemon_dir / "master"), "-c", str(self.config_dir)],
            self.workdir / "master.out",
            env=env,
            cwd=self.queue_dir,
        )
        host.wait_for_listen(self.port, alive=lambda: self._master.poll() is None)

    def _restart_master(self) -> None:
        if self._master is not None:
            stop_process(self._master)
        self._start_master()

    def _reload(self) -> None:
        """Make master(8) reread its configuration and restart its services."""
        pattern = r"postfix/master\[\d+\]: reload "
        before = host.count_lines(self.maillog, pattern)
        old = host.child_pids(self.master_pid)
        os.kill(self.master_pid, signal.SIGHUP)
        host.wait_until(
            lambda: host.count_lines(self.maillog, pattern) > before,
            10.0,
            "postfix to log its reload",
        )
        # Services of the old generation exit once idle. Waiting for them
        # ensures that no session is served with the old configuration.
        host.wait_until(
            lambda: not any(host.is_alive(pid) for pid in old),
            10.0,
            "postfix services of the old configuration to exit",
        )

    def _run(self, command: str, *args: str) -> None:
        """Run a Postfix command on this instance's configuration."""
        host.run_command([require_binary(command), "-c", str(self.config_dir), *args])

    # -- workload -------------------------------------------------------------

    def _send(self, token: str, deadline: float) -> _Session:
        """Send one message in one SMTP session with swaks.

        The session may last until ``deadline``, and at least one second so
        that every request of a workload is issued.
        """
        limit = max(1.0, deadline - time.monotonic())
        body = "\n".join(f"line {i} of the body of request {token}" for i in range(40))
        argv = [
            self._swaks,
            "--server",
            f"127.0.0.1:{self.port}",
            "--from",
            SENDER,
            "--to",
            RECIPIENT,
            "--helo",
            "driver.localdomain",
            "--header",
            f"Subject: request {token}",
            "--header",
            f"{REQUEST_HEADER}: {token}",
            "--body",
            body,
            "--suppress-data",
            "--timeout",
            f"{int(limit) + 1}s",
        ]
        session = _Session(token)
        try:
            result = subprocess.run(
                argv, capture_output=True, text=True, timeout=limit, check=False
            )
        except subprocess.TimeoutExpired:
            session.error = f"session timed out after {limit:.0f} s"
            return session
        queued = _QUEUED.search(result.stdout)
        if result.returncode == 0 and queued:
            session.queue_id = queued.group(1)
        else:
            session.error = f"rejected: {_swaks_error(result)}"
        return session

    def _await_delivery(
        self, sessions: list[_Session], log_offset: int, deadline: float
    ) -> list[str]:
        """Wait until each accepted message is stored or has failed.

        Return the errors of all sessions, rejected ones included.
        """
        errors = [f"{s.token}: {s.error}" for s in sessions if s.error]
        pending = {s.token: s for s in sessions if s.queue_id}
        failed: dict[str, str] = {}
        stored: set[str] = set()
        seen_files: set[str] = set()
        # Bounded by the deadline.
        while True:
            stored |= self._stored_tokens(seen_files)
            failed.update(self._failed_queue_ids(log_offset))
            waiting = [
                s
                for t, s in pending.items()
                if t not in stored and s.queue_id not in failed
            ]
            if not waiting or time.monotonic() > deadline:
                break
            time.sleep(0.05)

        for token, session in pending.items():
            if token in stored:
                continue
            if session.queue_id in failed:
                errors.append(f"{token}: {failed[session.queue_id]}")
            else:
                errors.append(
                    f"{token}: queued as {session.queue_id} but not "
                    f"delivered within {self.timeout:.0f} s"
                )
        return errors

    def _stored_tokens(self, seen_files: set[str]) -> set[str]:
        tokens = set()
        try:
            names = os.listdir(self.mailbox / "new")
        except OSError:
            return tokens
        for name in names:
            if name in seen_files:
                continue
            seen_files.add(name)
            try:
                with open(self.mailbox / "new" / name, errors="replace") as f:
                    head = f.read(8192)
            except OSError:
                continue
            tokens.update(_TOKEN.findall(head))
        return tokens

    def _failed_queue_ids(self, offset: int) -> dict[str, str]:
        failed = {}
        try:
            with open(self.maillog, errors="replace") as f:
                f.seek(offset)
                lines = f.read().splitlines()
        except FileNotFoundError:
            return failed
        for line in lines:
            match = _STATUS.search(line)
            if match and match["status"] != "sent":
                failed[match["qid"]] = f"{match['status']}: {match['reason']}"
        return failed

    # -- faults ---------------------------------------------------------------

    def _make_faults(self) -> list[Fault]:
        # The catalogue is built before setup() creates the user, so the
        # user is looked up when a fault is reverted.
        kill_helpers_on_revert = {
            "after_revert": lambda: host.kill_instance(
                self.instance, uid=self._user.pw_uid
            )
        }
        size_limit = {}

        def shrink_size_limit() -> None:
            size_limit["saved"] = _postconf_value(self.config_dir, "message_size_limit")
            self._run("postconf", "-e", "message_size_limit = 1024")

        def restore_size_limit() -> None:
            self._run("postconf", "-e", f"message_size_limit = {size_limit['saved']}")

        return [
            ReplaceFile(
                "helper-fails",
                "the delivery helper exits with EX_SOFTWARE, so every message bounces",
                self.deliver_path,
                FAILING_SCRIPT,
            ),
            ReplaceFile(
                "helper-hangs",
                "the delivery helper never returns, so local(8) kills it after "
                "command_time_limit and bounces the message",
                self.deliver_path,
                HANGING_SCRIPT,
                **kill_helpers_on_revert,
            ),
            KillProcesses(
                "worker-killed",
                "every cleanup(8) process is killed as it starts, so smtpd "
                "cannot queue messages and master(8) throttles the service",
                lambda: self.master_pid,
                comms={"cleanup"},
                # master(8) keeps a throttled service down for
                # service_throttle_time (60 s), so a restart brings it back.
                after_revert=self._restart_master,
            ),
            FullFilesystem(
                "mailbox-full",
                "the mailbox file system is full, so the helper cannot store "
                "messages and they are deferred",
                self.mailbox,
                subdirs=("tmp", "new"),
                **kill_helpers_on_revert,
            ),
            ChangeMode(
                "spool-permission",
                "the queue's incoming directory belongs to root with mode 0700, "
                "as after a restore by root, so cleanup(8) cannot create queue files",
                self.queue_dir / "incoming",
                mode=0o700,
                uid=0,
                gid=0,
                after_revert=self._restart_master,
            ),
            FunctionFault(
                "size-limit",
                "message_size_limit is set to 1024 bytes (a value meant in "
                "kilobytes), so smtpd rejects every message as too large",
                shrink_size_limit,
                restore_size_limit,
                after_apply=self._reload,
                after_revert=self._reload,
            ),
            DropReplies(
                "replies-dropped",
                "smtpd's replies to clients are dropped on loopback after the handshake, so SMTP sessions time out",
                lambda: self.port,
            ),
            LowerProcessLimit(
                "process-limit",
                "RLIMIT_NPROC of the mail system is 1, so the helper cannot "
                "fork as its user and messages bounce",
                lambda: [self.master_pid],
                nproc=1,
                after_apply=self._reload,
                after_revert=self._reload,
            ),
        ]


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _postconf_default(name: str) -> str:
    result = subprocess.run(
        [require_binary("postconf"), "-dh", name],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0 or not result.stdout.strip():
        raise ScenarioError(
            f"postconf failed to read the default {name}: {result.stderr.strip()}"
        )
    return result.stdout.strip()


def _postconf_value(config_dir: Path, name: str) -> str:
    argv = [require_binary("postconf"), "-c", str(config_dir), "-h", name]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ScenarioError(
            f"postconf failed to read {name} in {config_dir}: {result.stderr.strip()}"
        )
    return result.stdout.strip()


def _swaks_error(result: subprocess.CompletedProcess) -> str:
    """Return the first error line of a swaks transcript, or its exit status."""
    for line in result.stdout.splitlines() + result.stderr.splitlines():
        # "<**" marks an unexpected server reply, "***" an error of swaks.
        if line.startswith(("<**", "***")):
            return line[3:].strip()
    return f"swaks exited with status {result.returncode}"
