"""The tailored monitor's kernel side: load the planned programs, fill the
node-type filter, and read the windows' features from the maps."""

from __future__ import annotations

import ctypes
import logging
import os
import struct
from dataclasses import dataclass

import numpy as np

from syslrn.collect.build import build_object
from syslrn.collect.libbpf import BpfObject
from syslrn.collect.privileges import check_bpf_allowed
from syslrn.collect.procfs import unseen_comms
from syslrn.collect.trigger import Trigger, set_trigger
from syslrn.monitor.plan import MAX_NODE_TYPES, MonitorPlan

log = logging.getLogger(__name__)

OBJECT_NAME = "monitor"
SNAPSHOT_PROGRAM = "mon_snapshot"
ERRORS = ("procs_full", "connect_fds_full")


class MonitorConfig(ctypes.Structure):
    """``struct monitor_config`` of bpf/monitor.h."""

    _fields_ = [
        ("quiet_ns", ctypes.c_uint64),
        ("node_types", ctypes.c_uint32),
        ("track_degree", ctypes.c_uint32),
        ("trigger_kind", ctypes.c_uint32),
        ("trigger_port", ctypes.c_uint32),
        ("trigger_path_len", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
        ("trigger_path", ctypes.c_char * 108),
    ]


class WindowMeta(ctypes.Structure):
    """``struct window_meta`` of bpf/monitor.h."""

    _fields_ = [
        ("open_ns", ctypes.c_uint64),
        ("last_request_ns", ctypes.c_uint64),
        ("requests", ctypes.c_uint64),
    ]


class WindowState(ctypes.Structure):
    """``struct window_state`` of bpf/monitor.h."""

    _fields_ = [
        ("epoch", ctypes.c_uint64),
        ("current", WindowMeta),
        ("previous", WindowMeta),
        ("total_requests", ctypes.c_uint64),
    ]


_PROC_STATE = struct.Struct("<IIq")
_FEATURES = np.dtype([("count", "<i8"), ("degree", "<i8")])


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
        self.quiet_ns = int(quiet_s * 1e9)
        self.obj: BpfObject | None = None

    def load(self) -> None:
        """Load and attach the planned programs, then take the snapshot."""
        check_bpf_allowed("syslrn monitor")
        obj = BpfObject(build_object(OBJECT_NAME))
        try:
            obj.select_programs([*self.plan.programs, SNAPSHOT_PROGRAM])
            self._configure(obj)
            obj.load()
            self.obj = obj
            self._fill_names()
            for name in self.plan.programs:
                obj.attach(obj.program(name))
            self._snapshot()
        except BaseException:
            obj.close()
            self.obj = None
            raise
        log.info(
            "attached %d programs (%s), %d node types filtered",
            len(self.plan.programs),
            ", ".join(self.plan.programs),
            len(self.plan.node_types),
        )

    def _configure(self, obj: BpfObject) -> None:
        config = MonitorConfig()
        config.quiet_ns = self.quiet_ns
        config.node_types = len(self.plan.node_types)
        config.track_degree = int(self.plan.track_degree)
        set_trigger(config, self.trigger)
        obj.set_rodata(config)

    def _fill_names(self) -> None:
        names = self.obj.map("names")
        for node_type in self.plan.node_types:
            key = node_type.comm.encode().ljust(16, b"\0")[:16]
            names.update(key, struct.pack("<I", node_type.index))

    def _snapshot(self) -> None:
        """Give every live process its node type, counting the live ones.

        Processes the task iterator does not visit (pid 1 in some sandboxes)
        are added from procfs.
        """
        raw = self.obj.iterate(self.obj.program(SNAPSHOT_PROGRAM))
        seen = set(np.frombuffer(raw, dtype="<u4").tolist())
        procs = self.obj.map("procs")
        alive = self.obj.map("alive")
        types = {t.comm: t.index for t in self.plan.node_types}
        for pid, comm in unseen_comms(seen).items():
            key = struct.pack("<I", pid)
            if procs.lookup(key) is not None:
                continue
            index = types.get(comm, 0)
            procs.update(key, _PROC_STATE.pack(index, 0, 0))
            if index:
                current = struct.unpack("<q", alive.lookup(struct.pack("<I", index)))[0]
                alive.update(struct.pack("<I", index), struct.pack("<q", current + 1))

    # -- reading -----------------------------------------------------------

    def state(self) -> WindowState:
        raw = self.obj.map("state").lookup(struct.pack("<I", 0))
        return WindowState.from_buffer_copy(raw)

    def alive(self) -> dict[str, int]:
        """Return the live processes per node type, now."""
        alive = self.obj.map("alive")
        result = {}
        for node_type in self.plan.node_types:
            raw = alive.lookup(struct.pack("<I", node_type.index))
            result[node_type.name] = struct.unpack("<q", raw)[0]
        return result

    def window(self, epoch: int, meta: WindowMeta) -> WindowFeatures:
        """Read the features of window ``epoch``, whose metadata is ``meta``.

        The kernel keeps the current and the previous window, so ``epoch``
        must be one of those two.
        """
        windows = self.obj.map("windows")
        base = (epoch & 1) * (MAX_NODE_TYPES + 1)
        values: dict[str, int] = {}
        for node_type in self.plan.node_types:
            raw = windows.lookup(struct.pack("<I", base + node_type.index))
            count, degree = np.frombuffer(raw, dtype=_FEATURES)[0].tolist()
            if "count" in node_type.stats:
                values[f"count:{node_type.name}"] = count
            if "degree" in node_type.stats:
                values[f"degree:{node_type.name}"] = degree
        return WindowFeatures(
            epoch=epoch,
            open_ns=meta.open_ns,
            close_ns=meta.last_request_ns + self.quiet_ns,
            requests=meta.requests,
            values=values,
        )

    def errors(self) -> dict[str, int]:
        errors = self.obj.map("errors")
        return {
            name: struct.unpack("<Q", errors.lookup(struct.pack("<I", i)))[0]
            for i, name in enumerate(ERRORS)
        }

    def program_sizes(self) -> dict[str, int]:
        """Return the kernel's instruction count of each attached program."""
        return {name: self.obj.program(name).insn_count for name in self.plan.programs}

    def close(self) -> None:
        if self.obj is not None:
            self.obj.close()
            self.obj = None
            log.info("detached the monitor programs (pid %d)", os.getpid())
