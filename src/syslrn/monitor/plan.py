"""Backtracking: from a model's kept features to the smallest set of probes.

Each bag-of-nodes statistic changes on a known set of kernel events, so the
probes a model needs follow from which statistics it kept:

- ``count:T`` changes when a process of type T appears (fork), changes type
  (exec) or leaves (exit): the three process tracepoints.
- ``degree:T`` adds the edges of type-T processes: spawn edges (fork, and
  exec, which carries a process's degree to its new type) and connection
  ends (connect exit, accept and accept4 exit).
- The request count, which every model regresses on, needs the accept
  probes, which also recognise the trigger socket. A request that opens a
  window is handed to a program that opens it, by a tail call, so that the
  accept programs stay small.

The fork, exec and accept programs have two builds: one for counts only,
which keeps no per-window degree per process, and one for degrees too. A
plan loads the smaller build when no degree is kept. Only the node types of
kept features are loaded into the kernel's filter.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from syslrn.errors import ModelError

#: The kernel cuts comm, and so the node type it can see, to 15 bytes.
COMM_MAX = 15
MAX_NODE_TYPES = 64

#: Program name -> the hooks it attaches to, in bpf/monitor.bpf.c.
HOOKS = {
    "mon_fork": ("tp_btf/sched_process_fork",),
    "mon_fork_deg": ("tp_btf/sched_process_fork",),
    "mon_exec": ("tp_btf/sched_process_exec",),
    "mon_exec_deg": ("tp_btf/sched_process_exec",),
    "mon_exit": ("tp_btf/sched_process_exit",),
    "mon_connect": ("tracepoint/syscalls/sys_exit_connect",),
    "mon_accept": (
        "tracepoint/syscalls/sys_exit_accept4",
        "tracepoint/syscalls/sys_exit_accept",
    ),
    "mon_accept_deg": (
        "tracepoint/syscalls/sys_exit_accept4",
        "tracepoint/syscalls/sys_exit_accept",
    ),
    "mon_open": (),
    "mon_open_deg": (),
}

#: Programs attached nowhere -> the program that tail-calls them.
TAIL_CALLED = {"mon_open": "mon_accept", "mon_open_deg": "mon_accept_deg"}

#: The programs each statistic needs, request counting included.
STAT_PROGRAMS = {
    "count": ("mon_fork", "mon_exec", "mon_exit", "mon_accept", "mon_open"),
    "degree": (
        "mon_fork_deg",
        "mon_exec_deg",
        "mon_exit",
        "mon_connect",
        "mon_accept_deg",
        "mon_open_deg",
    ),
}

#: Programs in a stable order, for output and loading.
PROGRAM_ORDER = tuple(HOOKS)


@dataclass
class NodeTypePlan:
    """One node type filtered in the kernel."""

    name: str
    comm: str
    index: int
    stats: list[str]


@dataclass
class MonitorPlan:
    """The programs and node types the tailored monitor loads for one model."""

    node_types: list[NodeTypePlan]
    programs: list[str]
    track_degree: bool
    warnings: list[str] = field(default_factory=list)

    @property
    def hooks(self) -> dict[str, list[str]]:
        return {name: list(HOOKS[name]) for name in self.programs}

    @property
    def probes(self) -> int:
        """Number of attach points. An accept program has two."""
        return sum(len(HOOKS[name]) for name in self.programs)

    @property
    def features(self) -> list[str]:
        return [f"{stat}:{t.name}" for t in self.node_types for stat in t.stats]

    def to_dict(self) -> dict[str, Any]:
        document = asdict(self)
        document["hooks"] = self.hooks
        document["tail_called_by"] = {
            name: TAIL_CALLED[name] for name in self.programs if name in TAIL_CALLED
        }
        document["counters"] = [
            "procs map (node type of each process of a kept type, and its "
            "degree in the window when degrees are counted)",
            "names map (the kept node types' comm)",
            "openers map (the window opener that the accept program tail-calls)",
            ".bss: count and degree per node type for two windows, live "
            "processes per node type, the quiet time, the window's epoch, "
            "open time, last request and requests, and lost-event errors",
        ]
        document["probes"] = self.probes
        return document

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> MonitorPlan:
        return cls(
            node_types=[NodeTypePlan(**t) for t in document["node_types"]],
            programs=list(document["programs"]),
            track_degree=bool(document["track_degree"]),
            warnings=list(document.get("warnings", [])),
        )


def kernel_comm(name: str) -> bytes:
    """Return the bytes of comm that the kernel keeps for a node type: the
    first 15 bytes of its UTF-8 name, which may end inside a character."""
    return name.encode("utf-8", errors="surrogateescape")[:COMM_MAX]


def kept_features(model: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the kept bag-of-nodes features of a model document."""
    features = [f for f in model.get("features", []) if f.get("kept")]
    if not features:
        raise ModelError(
            "the model keeps no feature, so there is nothing to monitor; "
            "train on runs with more varied request counts"
        )
    return features


def make_plan(model: dict[str, Any]) -> MonitorPlan:
    """Compute the monitor plan of a model document.

    Raises
    ------
    ModelError
        No feature is kept, a kept feature is not bag-of-nodes, or more node
        types are kept than the kernel filter holds.
    """
    stats_by_type: dict[str, set[str]] = {}
    for feature in kept_features(model):
        name = feature["name"]
        stat, sep, node_type = name.partition(":")
        if not sep or stat not in STAT_PROGRAMS:
            raise ModelError(
                f"kept feature {name!r} is not a bag-of-nodes feature "
                "(count:T or degree:T); the monitor cannot count it in the kernel"
            )
        if not node_type:
            raise ModelError(
                f"kept feature {name!r} names no node type; a node type is an "
                "executable name, as in count:nginx"
            )
        if "\0" in node_type:
            raise ModelError(
                f"kept feature {name!r} has a NUL byte in its node type, which no "
                "comm can contain; correct the name in the model file"
            )
        if stat in stats_by_type.get(node_type, ()):
            raise ModelError(
                f"kept feature {name!r} appears twice in the model; keep one "
                "entry per feature"
            )
        stats_by_type.setdefault(node_type, set()).add(stat)
    if len(stats_by_type) > MAX_NODE_TYPES:
        raise ModelError(
            f"the model keeps {len(stats_by_type)} node types; the monitor "
            f"filters at most {MAX_NODE_TYPES}"
        )

    node_types, warnings = [], []
    seen_comms: dict[bytes, str] = {}
    for index, name in enumerate(sorted(stats_by_type), start=1):
        raw = kernel_comm(name)
        comm = raw.decode("utf-8", errors="surrogateescape")
        if raw != name.encode("utf-8", errors="surrogateescape"):
            warnings.append(
                f"node type {name!r} is longer than {COMM_MAX} bytes; the kernel "
                f"matches it by its prefix {raw!r}, so any other executable whose "
                f"name starts with these {COMM_MAX} bytes is counted as {name!r} too"
            )
        if "\ufffd" in name:
            # Traces decode a comm that is not valid UTF-8 with U+FFFD, so
            # the name no longer has the kernel's bytes.
            warnings.append(
                f"node type {name!r} has bytes that are not UTF-8 in the traces; "
                "the kernel cannot match it, so its features will read 0"
            )
        if raw in seen_comms:
            raise ModelError(
                f"node types {seen_comms[raw]!r} and {name!r} share the "
                f"{COMM_MAX}-byte prefix {raw!r}, which the kernel cannot tell apart"
            )
        seen_comms[raw] = name
        node_types.append(
            NodeTypePlan(
                name=name, comm=comm, index=index, stats=sorted(stats_by_type[name])
            )
        )

    # The degree build of each program counts too, so a plan that keeps any
    # degree loads that build alone.
    track_degree = any("degree" in stats for stats in stats_by_type.values())
    needed = set(STAT_PROGRAMS["degree" if track_degree else "count"])
    programs = [name for name in PROGRAM_ORDER if name in needed]
    return MonitorPlan(
        node_types=node_types,
        programs=programs,
        track_degree=track_degree,
        warnings=warnings,
    )
