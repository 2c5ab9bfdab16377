"""The tailored monitor's kernel side: load the planned programs, fill the
node-type filter, and read the windows' features from the maps."""

from __future__ import annotations

import ctypes
import errno
import logging
import mmap
import os
import struct
from dataclasses import dataclass

import numpy as np

from syslrn.collect.build import build_object
from syslrn.collect.clock import boottime_ns
from syslrn.collect.libbpf import BpfObject
from syslrn.collect.privileges import check_bpf_allowed
from syslrn.collect.procfs import is_running, unseen_comms
from syslrn.collect.trigger import Trigger, set_trigger
from syslrn.errors import BpfError, SyslrnError
from syslrn.monitor.plan import TAIL_CALLED, MonitorPlan, kernel_comm
from syslrn.text import format_count

log = logging.getLogger(__name__)

OBJECT_NAME = "monitor"
SNAPSHOT_PROGRAM = "mon_snapshot"
#: The process programs, in the order they are attached, before the
#: start-up snapshot. Exit comes first, so that the exit of every process
#: that the exec or fork program adds is seen. Exec comes before fork,
#: so that a child the fork program types by its parent's comm has its
#: exec seen too.
PROCESS_PROGRAMS = ("mon_exit", "mon_exec", "mon_exec_deg", "mon_fork", "mon_fork_deg")
ERRORS = ("procs_full", "no_opener", "open_wait")
_MONITOR_ERROR_MAX = 4
#: The kernel programs compare times as signed 64-bit nanoseconds, with the
#: first window's last request set a quiet time back from start-up, so the
#: quiet time and the host's uptime must each stay under 2**62 ns (146 years).
MAX_QUIET_NS = 2**62
#: Node type slots in bpf/monitor.h, node type 0 included.
TYPE_SLOTS = 128


class MonitorConfig(ctypes.Structure):
    """``struct monitor_config`` of bpf/monitor.h."""

    _fields_ = [
        ("node_types", ctypes.c_uint32),
        ("trigger_kind", ctypes.c_uint32),
        ("trigger_port", ctypes.c_uint32),
        ("trigger_path_len", ctypes.c_uint32),
        ("trigger_path", ctypes.c_char * 108),
        ("trigger_path_pad", ctypes.c_char * 4),
    ]


class _RawMeta(ctypes.Structure):
    """``struct window_meta`` of bpf/monitor.h."""

    _fields_ = [
        ("open_ns", ctypes.c_uint64),
        ("first_request", ctypes.c_uint64),
        ("last_request_ns", ctypes.c_uint64),
    ]


class _RawWindow(ctypes.Structure):
    """``struct window_state`` of bpf/monitor.h."""

    _fields_ = [
        ("quiet_ns", ctypes.c_uint64),
        ("epoch", ctypes.c_uint64),
        ("requests", ctypes.c_uint64),
        ("last_request_ns", ctypes.c_uint64),
        ("opening", ctypes.c_uint64),
        ("meta", _RawMeta * 2),
    ]


class _RawFeatures(ctypes.Structure):
    """``struct node_features`` of bpf/monitor.h."""

    _fields_ = [("count", ctypes.c_int64), ("degree", ctypes.c_int64)]


class _RawTypeState(ctypes.Structure):
    """``struct type_state`` of bpf/monitor.h."""

    _fields_ = [("windows", _RawFeatures * 2), ("live", ctypes.c_int64)]


class _RawState(ctypes.Structure):
    """``struct monitor_state`` of bpf/monitor.h, the programs' ``.bss``."""

    _fields_ = [
        ("window", _RawWindow),
        ("types", _RawTypeState * TYPE_SLOTS),
        ("errors", ctypes.c_uint64 * _MONITOR_ERROR_MAX),
    ]


_PROC_STATE = struct.Struct("<IIq")
BPF_NOEXIST = 1


@dataclass(frozen=True)
class WindowMeta:
    """The opening time, last request and request count of a window."""

    open_ns: int
    last_request_ns: int
    requests: int


@dataclass(frozen=True)
class WindowState:
    """The kernel's current window and the one before it."""

    epoch: int
    current: WindowMeta
    previous: WindowMeta
    total_requests: int


@dataclass(frozen=True)
class WindowFeatures:
    """The features of one closed window, as the kernel counted them."""

    epoch: int
    open_ns: int
    close_ns: int
    requests: int
    values: dict[str, int]


class MonitorProbes:
    """The loaded monitor programs of one plan.

    Parameters
    ----------
    plan : MonitorPlan
    trigger : Trigger
        The service socket whose accepts count as requests.
    quiet_s : float
        A window closes after this long without a request.
    """

    def __init__(self, plan: MonitorPlan, trigger: Trigger, quiet_s: float):
        self.plan = plan
        self.trigger = trigger
        # Checked in seconds first, because above about 1.8e299 s the
        # nanoseconds overflow to infinity, which int() rejects.
        if not 1e-9 <= quiet_s <= MAX_QUIET_NS / 1e9:
            raise SyslrnError(
                f"invalid quiet time {quiet_s:g} s: it must be at least 1 ns and at "
                f"most {MAX_QUIET_NS / 1e9:.3g} s, because the kernel compares times as "
                "signed 64-bit nanoseconds"
            )
        # Rounding at either bound must not step outside it.
        self.quiet_ns = min(MAX_QUIET_NS, max(1, round(quiet_s * 1e9)))
        self.obj: BpfObject | None = None
        self._bss: mmap.mmap | None = None
        self._last: _RawState | None = None
        # Processes that user space put in procs at start-up, by node type
        # index. The kernel's live counts leave them out, and the exit
        # program takes them out when they exit, so each window's counts
        # get them added back.
        self._seeded: dict[int, int] = {}

    def load(self) -> None:
        """Load and attach the planned programs, then take the snapshot."""
        check_bpf_allowed("syslrn monitor")
        obj = BpfObject(build_object(OBJECT_NAME))
        try:
            obj.select_programs([*self.plan.programs, SNAPSHOT_PROGRAM])
            self._configure(obj)
            obj.load()
            self.obj = obj
            self._bss = self._map_state(obj)
            self._fill_names()
            self._fill_openers()
            attached_ns = boottime_ns()
            self._set_times(attached_ns)
            hooks = self.plan.hooks
            process = [name for name in PROCESS_PROGRAMS if name in hooks]
            for name in process:
                self._attach(name)
            self._snapshot(attached_ns)
            # The accept and connect programs come last, so that no window
            # opens before the snapshot has counted the live processes.
            for name in hooks:
                if name not in process:
                    self._attach(name)
        except BaseException:
            if self._bss is not None:
                self._bss.close()
                self._bss = None
            obj.close()
            self.obj = None
            raise
        log.info(
            "loaded %s (%s), attached at %s, %s filtered",
            format_count(len(self.plan.programs), "program"),
            ", ".join(self.plan.programs),
            format_count(self.plan.probes, "probe"),
            format_count(len(self.plan.node_types), "node type"),
        )

    def _attach(self, name: str) -> None:
        for hook in self.plan.hooks[name]:
            self.obj.attach(self.obj.program(name), hook)

    def _configure(self, obj: BpfObject) -> None:
        config = MonitorConfig()
        config.node_types = len(self.plan.node_types)
        set_trigger(config, self.trigger)
        obj.set_rodata(config)

    @staticmethod
    def _map_state(obj: BpfObject) -> mmap.mmap:
        bss = obj.map(".bss")
        if bss.value_size < ctypes.sizeof(_RawState):
            raise BpfError(
                f"{obj.path.name}: .bss has {bss.value_size} bytes, but the monitor "
                f"state needs {ctypes.sizeof(_RawState)}; rebuild the BPF objects"
            )
        return bss.mmap()

    def _set_times(self, attached_ns: int) -> None:
        """Write the quiet time into ``.bss``, and a last request one quiet
        time and a nanosecond before ``attached_ns``, so that no window is
        open before the first request, however long the host has been up.
        """
        window = _RawState.window.offset
        struct.pack_into(
            "<Q", self._bss, window + _RawWindow.quiet_ns.offset, self.quiet_ns
        )
        struct.pack_into(
            "<Q",
            self._bss,
            window + _RawWindow.last_request_ns.offset,
            (attached_ns - self.quiet_ns - 1) % 2**64,
        )

    def _fill_names(self) -> None:
        names = self.obj.map("names")
        for node_type in self.plan.node_types:
            key = kernel_comm(node_type.name).ljust(16, b"\0")
            names.update(key, struct.pack("<I", node_type.index))

    def _fill_openers(self) -> None:
        """Put the plan's window opener where the accept program tail-calls."""
        openers = self.obj.map("openers")
        for name in self.plan.programs:
            if name in TAIL_CALLED:
                fd = self.obj.program(name).fd
                openers.update(struct.pack("<I", 0), struct.pack("<I", fd))

    def _snapshot(self, attached_ns: int) -> None:
        """Put every live process of a kept node type in procs.

        Processes the task iterator does not visit (pid 1 in some sandboxes)
        and that started before ``attached_ns`` are added from procfs.
        """
        raw = self.obj.iterate(self.obj.program(SNAPSHOT_PROGRAM))
        seen = set(np.frombuffer(raw, dtype="<u4").tolist())
        procs = self.obj.map("procs")
        types = {t.comm: t.index for t in self.plan.node_types}
        for pid, (comm, start_ns) in unseen_comms(seen, attached_ns).items():
            index = types.get(comm, 0)
            if not index:
                continue
            key = struct.pack("<I", pid)
            try:
                procs.update(
                    key,
                    _PROC_STATE.pack(index, 0, 0),
                    BPF_NOEXIST,
                )
            except BpfError as exc:
                # EEXIST: the fork or exec program has added and counted it.
                if exc.errno != errno.EEXIST:
                    log.warning(
                        "could not add pid %d (%s) to procs: %s", pid, comm, exc
                    )
                continue
            # A process that exited since procfs showed it had its exit
            # event before or after the insert. Before, the entry is stale,
            # so it is deleted here. After, the exit program deleted it and
            # took it out of the live count, so the seeded count makes up
            # for that.
            if not is_running(pid, start_ns) and procs.delete(key):
                continue
            self._seeded[index] = self._seeded.get(index, 0) + 1

    # -- reading -----------------------------------------------------------

    def _read(self) -> _RawState:
        """Copy the programs' state, and copy it again while a window opens.

        ``opening`` and the epoch act as a sequence lock, so that the copy
        does not mix two windows.
        """
        for _ in range(1000):
            raw = _RawState.from_buffer_copy(self._bss)
            after = _RawWindow.from_buffer_copy(self._bss)
            if (
                not (raw.window.opening or after.opening)
                and after.epoch == raw.window.epoch
            ):
                break
        else:
            log.warning(
                "window %d was still opening after 1000 reads, so its counts may "
                "mix two windows",
                raw.window.epoch + 1,
            )
        self._last = raw
        return raw

    def state(self) -> WindowState:
        """Read the windows' state, and keep the features of the same read
        for :meth:`window`."""
        w = self._read().window
        current = w.meta[w.epoch & 1]
        previous = w.meta[(w.epoch - 1) & 1]
        return WindowState(
            epoch=w.epoch,
            current=WindowMeta(
                open_ns=current.open_ns,
                last_request_ns=w.last_request_ns,
                requests=w.requests - current.first_request,
            ),
            previous=WindowMeta(
                open_ns=previous.open_ns,
                last_request_ns=previous.last_request_ns,
                requests=current.first_request - previous.first_request,
            ),
            total_requests=w.requests,
        )

    def window(self, epoch: int, meta: WindowMeta) -> WindowFeatures:
        """Return the features of window ``epoch``, whose metadata is
        ``meta``, from the last :meth:`state` read.

        The kernel keeps the current and the previous window, so ``epoch``
        must be one of those two.
        """
        raw = self._last if self._last is not None else self._read()
        values: dict[str, int] = {}
        for node_type in self.plan.node_types:
            features = raw.types[node_type.index].windows[epoch & 1]
            if "count" in node_type.stats:
                seeded = self._seeded.get(node_type.index, 0)
                values[f"count:{node_type.name}"] = features.count + seeded
            if "degree" in node_type.stats:
                values[f"degree:{node_type.name}"] = features.degree
        return WindowFeatures(
            epoch=epoch,
            open_ns=meta.open_ns,
            close_ns=meta.last_request_ns + self.quiet_ns,
            requests=meta.requests,
            values=values,
        )

    def errors(self) -> dict[str, int]:
        raw = _RawState.from_buffer_copy(self._bss)
        return {name: raw.errors[i] for i, name in enumerate(ERRORS)}

    def program_sizes(self) -> dict[str, int]:
        """Return the kernel's instruction count of each attached program."""
        return {name: self.obj.program(name).insn_count for name in self.plan.programs}

    def close(self) -> None:
        if self.obj is not None:
            # The state's memory goes with the object.
            self._last = _RawState.from_buffer_copy(self._bss)
            self._bss.close()
            self._bss = None
            self.obj.close()
            self.obj = None
            log.info("detached the monitor programs (pid %d)", os.getpid())
