"""Fault injectors that scenarios compose into their catalogues.

Each class injects one kind of operational failure into files, mounts or
processes that the scenario set up itself. The kinds are a replaced
helper program, a changed file mode, a full file system, worker processes
killed as they start and a lowered process limit. ``revert`` puts back
what ``apply`` changed, and does nothing when the fault is not applied.
"""

from __future__ import annotations

import logging
import os
import resource
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Collection
from pathlib import Path

from syslrn.scenarios import host
from syslrn.scenarios.base import Fault
from syslrn.scenarios.support import ScenarioError
from syslrn.text import format_count

log = logging.getLogger(__name__)

Hook = Callable[[], None]


class HostFault(Fault):
    """A fault with optional steps to run after it is applied and reverted.

    The steps make the application notice the change, for example a reload
    after a configuration edit or a restart after workers were killed.
    """

    def __init__(
        self,
        name: str,
        description: str,
        *,
        after_apply: Hook | None = None,
        after_revert: Hook | None = None,
    ):
        self.name = name
        self.description = description
        self.after_apply = after_apply
        self.after_revert = after_revert
        self.applied = False

    def apply(self) -> None:
        if self.applied:
            return
        log.info("applying fault %s", self.name)
        self._apply()
        self.applied = True
        if self.after_apply is not None:
            self.after_apply()

    def revert(self) -> None:
        if not self.applied:
            return
        log.info("reverting fault %s", self.name)
        self._revert()
        self.applied = False
        if self.after_revert is not None:
            self.after_revert()

    def _apply(self) -> None:
        raise NotImplementedError

    def _revert(self) -> None:
        raise NotImplementedError


class FunctionFault(HostFault):
    """A fault given by two functions, for changes specific to one application.

    Pass the step that makes the application notice the change (a reload)
    as ``after_apply``, not inside ``apply``: a fault counts as applied once
    ``apply`` returns, so that :meth:`revert` undoes it even if that step fails.
    """

    def __init__(self, name: str, description: str, apply: Hook, revert: Hook, **hooks):
        super().__init__(name, description, **hooks)
        self._apply_function = apply
        self._revert_function = revert

    def _apply(self) -> None:
        self._apply_function()

    def _revert(self) -> None:
        self._revert_function()


class ReplaceFile(HostFault):
    """Replace a file, typically a helper program, with other contents.

    The replacement is an atomic rename, so a process that is running the
    old program finishes with it and the next exec runs the new one.
    """

    def __init__(self, name: str, description: str, path: Path, text: str, **hooks):
        super().__init__(name, description, **hooks)
        self.path = Path(path)
        self.text = text
        self._saved: bytes = b""

    def _apply(self) -> None:
        self._saved = self.path.read_bytes()
        _replace(self.path, self.text.encode())

    def _revert(self) -> None:
        _replace(self.path, self._saved)


class ChangeMode(HostFault):
    """Change the mode or the owner of a file or directory."""

    def __init__(
        self,
        name: str,
        description: str,
        path: Path,
        *,
        mode: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
        **hooks,
    ):
        super().__init__(name, description, **hooks)
        self.path = Path(path)
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self._saved: os.stat_result | None = None

    def _apply(self) -> None:
        self._saved = self.path.stat()
        os.chown(
            self.path,
            -1 if self.uid is None else self.uid,
            -1 if self.gid is None else self.gid,
        )
        if self.mode is not None:
            os.chmod(self.path, self.mode)

    def _revert(self) -> None:
        saved = self._saved
        os.chown(self.path, saved.st_uid, saved.st_gid)
        os.chmod(self.path, saved.st_mode & 0o7777)


class FullFilesystem(HostFault):
    """Mount a one-page tmpfs over a directory and fill it up.

    The directory keeps its owner, its mode and the subdirectories named in
    ``subdirs``, so programs find the layout they expect and then fail with
    ENOSPC on their first write. Reverting unmounts the tmpfs, which brings
    back the directory's own contents.
    """

    def __init__(
        self,
        name: str,
        description: str,
        path: Path,
        *,
        subdirs: Collection[str] = (),
        **hooks,
    ):
        super().__init__(name, description, **hooks)
        self.path = Path(path)
        self.subdirs = tuple(subdirs)

    def _apply(self) -> None:
        st = self.path.stat()
        host.mount_tmpfs(
            self.path, "4k", uid=st.st_uid, gid=st.st_gid, mode=st.st_mode & 0o7777
        )
        try:
            for name in self.subdirs:
                sub = self.path / name
                sub.mkdir()
                os.chown(sub, st.st_uid, st.st_gid)
                sub.chmod(st.st_mode & 0o7777)
            host.fill_filesystem(self.path)
        except BaseException:
            host.unmount(self.path)
            raise

    def _revert(self) -> None:
        host.unmount(self.path)


class KillProcesses(HostFault):
    """Kill a server's worker processes with SIGKILL as soon as they appear.

    A thread polls the children of ``parent()`` every ``interval`` seconds
    and kills those whose comm is in ``comms`` (every child when ``comms``
    is None), as an out-of-memory killer or an operator's stray ``kill``
    would. It runs from :meth:`apply` until :meth:`revert`. A worker that
    starts and exits within one interval escapes it.
    """

    def __init__(
        self,
        name: str,
        description: str,
        parent: Callable[[], int],
        *,
        comms: Collection[str] | None = None,
        interval: float = 0.01,
        **hooks,
    ):
        super().__init__(name, description, **hooks)
        self.parent = parent
        self.comms = None if comms is None else frozenset(comms)
        self.interval = interval
        self.killed = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _apply(self) -> None:
        self.killed = 0
        self._stop.clear()
        parent = self.parent()
        self._thread = threading.Thread(
            target=self._run, args=(parent,), name=f"fault-{self.name}", daemon=True
        )
        self._thread.start()

    def _revert(self) -> None:
        self._stop.set()
        self._thread.join()
        log.info(
            "fault %s killed %s",
            self.name,
            format_count(self.killed, "process", "processes"),
        )

    def _run(self, parent: int) -> None:
        while not self._stop.is_set():
            for pid in host.child_pids(parent):
                if self.comms is not None and host.process_comm(pid) not in self.comms:
                    continue
                self.killed += host.kill_processes([pid], signal.SIGKILL)
            self._stop.wait(self.interval)


class LowerProcessLimit(HostFault):
    """Lower the soft RLIMIT_NPROC of running processes.

    Children inherit the limit, and the kernel checks it against their real
    user: a fork fails with EAGAIN once that user runs ``nproc`` processes,
    and so does an exec right after a switch to a user who runs more. Only the
    soft limit moves: raising it back up to the unchanged hard limit needs
    no privilege, while raising a hard limit needs CAP_SYS_RESOURCE, which
    root inside a container may lack.
    """

    def __init__(
        self,
        name: str,
        description: str,
        pids: Callable[[], list[int]],
        nproc: int,
        **hooks,
    ):
        super().__init__(name, description, **hooks)
        self.pids = pids
        self.nproc = nproc
        self._saved: dict[int, tuple[int, int]] = {}

    def _apply(self) -> None:
        self._saved = {}
        for pid in self.pids():
            try:
                soft, hard = resource.prlimit(pid, resource.RLIMIT_NPROC)
                resource.prlimit(pid, resource.RLIMIT_NPROC, (self.nproc, hard))
            except ProcessLookupError:
                continue
            self._saved[pid] = (soft, hard)

    def _revert(self) -> None:
        for pid, limits in self._saved.items():
            try:
                resource.prlimit(pid, resource.RLIMIT_NPROC, limits)
            except ProcessLookupError:
                continue


def _replace(path: Path, data: bytes) -> None:
    """Replace ``path`` atomically with ``data``, keeping its mode and owner."""
    st = path.stat()
    tmp = path.with_name(f".{path.name}.new")
    try:
        tmp.write_bytes(data)
        os.chown(tmp, st.st_uid, st.st_gid)
        tmp.chmod(st.st_mode & 0o7777)
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ScenarioError(f"failed to replace {path}: {exc.strerror}") from None


class DropReplies(HostFault):
    """Drop, on loopback, the data segments a server sends from its TCP port.

    The handshake still completes, so the server accepts each connection
    (and the trigger counts it as a request), but its replies never reach
    the client, which times out: a network fault after the accept, as a
    broken link or a full queue on a real network would give. The rule
    matches the port and the loopback interface only, and a comment that
    names the fault, so it touches no other traffic and reverts exactly.
    """

    def __init__(self, name: str, description: str, port: Callable[[], int], **hooks):
        super().__init__(name, description, **hooks)
        self._port = port
        self._rule: list[str] | None = None

    def _spec(self) -> list[str]:
        return [
            "OUTPUT",
            "-o",
            "lo",
            "-p",
            "tcp",
            "--sport",
            str(self._port()),
            "--tcp-flags",
            "PSH",
            "PSH",
            "-m",
            "comment",
            "--comment",
            f"syslrn-{self.name}-{os.getpid()}",
            "-j",
            "DROP",
        ]

    def _iptables(self, action: str, spec: list[str]) -> None:
        binary = shutil.which("iptables")
        if binary is None:
            raise ScenarioError(
                f"fault {self.name}: iptables not found; install the iptables package"
            )
        result = subprocess.run(
            [binary, "-w", action, *spec], capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise ScenarioError(
                f"fault {self.name}: iptables {action} failed: {result.stderr.strip()}"
            )

    def _apply(self) -> None:
        spec = self._spec()
        self._iptables("-I", spec)
        self._rule = spec

    def _revert(self) -> None:
        if self._rule is not None:
            self._iptables("-D", self._rule)
            self._rule = None
