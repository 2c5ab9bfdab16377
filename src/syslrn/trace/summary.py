"""A human summary of one trace: what ``syslrn trace show`` prints."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from syslrn.text import format_count
from syslrn.trace.io import Trace
from syslrn.trace.schema import ACCEPT, CONNECT, EXEC, FLAG_DRIVER, FORK, SNAPSHOT


@dataclass
class ProcessInfo:
    """One process instance as the trace shows it."""

    pid: int
    start_ns: int
    comm: str
    label: str
    parent: tuple[str, int, int] | None = None
    forked: bool = False
    driver: bool = False


@dataclass
class TraceSummary:
    path: str
    meta: dict[str, Any]
    duration_s: float
    events_by_kind: dict[str, int]
    processes: dict[tuple[str, int, int], ProcessInfo] = field(default_factory=dict)
    connections: dict[str, int] = field(default_factory=dict)

    def executables(self, started_only: bool = True) -> Counter:
        return Counter(
            p.label for p in self.processes.values() if p.forked or not started_only
        )

    def parents_of(self, label: str) -> Counter:
        """Count the labels of the parents of processes labelled ``label``."""
        parents: Counter = Counter()
        for proc in self.processes.values():
            if proc.label != label or not proc.forked:
                continue
            parent = self.processes.get(proc.parent) if proc.parent else None
            if parent is not None:
                parents[parent.label] += 1
            elif proc.parent and proc.parent[1] == self.meta.get("recorder_pid"):
                parents["the recorder"] += 1
            else:
                parents["not traced"] += 1
        return parents


def _column(table: pa.Table, name: str) -> list:
    return table.column(name).to_pylist()


def summarize(trace: Trace) -> TraceSummary:
    """Summarize a trace. One pass over the rows that name processes."""
    table = trace.table
    kinds = table.column("kind").cast(pa.string())
    counts = pc.value_counts(kinds).to_pylist()
    events_by_kind = {item["values"]: item["counts"] for item in counts}

    meta = trace.meta
    if "duration_s" in meta:
        duration = float(meta["duration_s"])
    elif table.num_rows:
        ts = table.column("ts_ns")
        duration = (pc.max(ts).as_py() - pc.min(ts).as_py()) / 1e9
    else:
        duration = 0.0

    summary = TraceSummary(
        path=os.fspath(trace.path) if trace.path else "<memory>",
        meta=meta,
        duration_s=duration,
        events_by_kind=events_by_kind,
    )
    _collect_processes(summary, table, kinds)
    _collect_connections(summary, table, kinds)
    return summary


def _collect_processes(summary: TraceSummary, table: pa.Table, kinds: pa.Array) -> None:
    wanted = pc.is_in(kinds, pa.array([SNAPSHOT, FORK, EXEC]))
    rows = table.filter(wanted).select(
        [
            "host",
            "kind",
            "pid",
            "start_ns",
            "ppid",
            "parent_start_ns",
            "comm",
            "filename",
            "flags",
        ]
    )
    columns = {name: _column(rows, name) for name in rows.column_names}
    processes = summary.processes
    for i in range(rows.num_rows):
        key = (columns["host"][i], columns["pid"][i], columns["start_ns"][i])
        proc = processes.get(key)
        if proc is None:
            comm = columns["comm"][i] or "?"
            proc = processes[key] = ProcessInfo(
                pid=key[1], start_ns=key[2], comm=comm, label=comm
            )
        kind = columns["kind"][i]
        if kind in (FORK, SNAPSHOT) and columns["ppid"][i] is not None:
            proc.parent = (key[0], columns["ppid"][i], columns["parent_start_ns"][i])
            proc.forked = proc.forked or kind == FORK
        if kind == EXEC and columns["filename"][i]:
            proc.label = (
                os.path.basename(columns["filename"][i].rstrip("/")) or proc.comm
            )
        if columns["flags"][i] & FLAG_DRIVER:
            proc.driver = True


def _collect_connections(
    summary: TraceSummary, table: pa.Table, kinds: pa.Array
) -> None:
    ends = table.filter(pc.is_in(kinds, pa.array([CONNECT, ACCEPT])))
    families = ends.column("family").cast(pa.string()).to_pylist()
    end_kinds = ends.column("kind").cast(pa.string()).to_pylist()
    counter = Counter(
        f"{family} {kind}" for family, kind in zip(families, end_kinds, strict=True)
    )
    summary.connections = dict(sorted(counter.items()))


def format_summary(summary: TraceSummary, top: int = 10) -> str:
    """Render a summary as aligned text lines."""
    meta = summary.meta
    lines = []

    def row(name: str, value: str) -> None:
        lines.append(f"{name:<12} {value}")

    state = "complete" if meta.get("complete") else "INCOMPLETE (interrupted recording)"
    row("trace", f"{summary.path} ({state})")
    hosts = meta.get("hosts") or [meta.get("host", "?")]
    row("host", f"{', '.join(map(str, hosts))}, kernel {meta.get('kernel', '?')}")
    row("duration", f"{summary.duration_s:.3f} s")
    labels = meta.get("labels") or {}
    if labels:
        row("labels", " ".join(f"{k}={v}" for k, v in sorted(labels.items())))
    total = sum(summary.events_by_kind.values())
    by_kind = ", ".join(f"{k} {v}" for k, v in sorted(summary.events_by_kind.items()))
    row("events", f"{total} ({by_kind})" if total else "0")

    procs = summary.processes.values()
    started = sum(1 for p in procs if p.forked)
    drivers = sum(1 for p in procs if p.driver)
    row(
        "processes",
        f"{len(summary.processes)} ({len(summary.processes) - started} alive at start, "
        f"{started} started, {drivers} in the driver tree)",
    )
    executables = summary.executables().most_common(top)
    if executables:
        lines.append("executables started during the recording (parents):")
        for label, n in executables:
            parents = ", ".join(
                f"{p} x{c}" for p, c in summary.parents_of(label).most_common(3)
            )
            lines.append(f"  {n:>6}  {label:<24} ({parents})")
    if summary.connections:
        row(
            "connections", ", ".join(f"{k} {v}" for k, v in summary.connections.items())
        )
    else:
        row("connections", "none")
    trigger = meta.get("trigger")
    requests = meta.get("requests")
    if trigger:
        row("requests", f"{requests} accepted at {trigger}")
    elif requests is not None:
        row("requests", f"{requests}")
    elif labels.get("requests") is not None:
        row("requests", f"{labels['requests']} (label; no trigger)")
    else:
        row("requests", "not counted (no trigger)")
    lost = meta.get("lost")
    if lost is None and meta.get("complete"):
        row("lost", "not stored in this file")
    elif lost is None:
        row("lost", "unknown (the recording did not finish)")
    else:
        row("lost", _format_lost(lost))
    return "\n".join(lines)


def _format_lost(lost: dict[str, int]) -> str:
    events = lost.get("reserve_failed", 0)
    text = format_count(events, "event")
    if events:
        text += " (ring buffer reservations failed: this trace is missing events)"
    others = {k: v for k, v in lost.items() if k != "reserve_failed" and v}
    if others:
        text += "; " + ", ".join(
            f"{k.replace('_', ' ')} {v}" for k, v in others.items()
        )
    return text
