"""Merge the traces that several hosts recorded of the same run.

Process instances are ``(host, pid, start_ns)``, so the rows of distinct
hosts never collide, and :func:`syslrn.graph.build_graph` joins the two ends
of a TCP connection across hosts by their mirrored 4-tuples. Merging is
therefore a concatenation of rows plus a merge of the metadata documents.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from syslrn.errors import TraceError
from syslrn.trace.io import Trace
from syslrn.trace.schema import EVENT_SCHEMA, SCHEMA_VERSION

log = logging.getLogger(__name__)

#: Default maximum time in seconds between the recordings of merged traces.
#: The recordings of one run overlap, so a gap means traces of different
#: runs, or host clocks that disagree.
MAX_GAP_S = 60.0


def trace_hosts(trace: Trace) -> set[str]:
    """Return the host names that occur in a trace's rows and metadata."""
    column = trace.table.column("host")
    hosts = {str(h) for h in pc.unique(column).to_pylist() if h is not None}
    hosts.update(str(h) for h in trace.meta.get("hosts") or [])
    if trace.meta.get("host"):
        hosts.add(str(trace.meta["host"]))
    return hosts


def recording_interval_ns(trace: Trace) -> tuple[int, int] | None:
    """Return the wall-clock start and stop of a trace's recording.

    Both are in nanoseconds since the Unix epoch. An interrupted recording
    has no stop time, so the time of its last event is used. Returns None when
    the metadata has no wall-clock start, as in hand-built traces and in
    traces recorded before the recorder stored one.
    """
    meta = trace.meta
    start, stop = meta.get("started_unix_ns"), meta.get("stopped_unix_ns")
    if not isinstance(start, int):
        return None
    if isinstance(stop, int):
        return start, stop
    started_ns = meta.get("started_ns")
    last_ns = pc.max(trace.table.column("ts_ns")).as_py()
    if not isinstance(started_ns, int) or last_ns is None:
        return None
    # Event times are boot time, which advances at the rate of the wall
    # clock unless someone sets the wall clock.
    return start, start + max(int(last_ns) - started_ns, 0)


def check_overlap(traces: Sequence[Trace], max_gap_s: float = MAX_GAP_S) -> None:
    """Check that the recordings of ``traces`` overlap in wall-clock time.

    The gap is the time from the earliest stop to the latest start, so it
    is 0 when one instant lies in every recording. A gap up to
    ``max_gap_s`` logs a warning, since host clocks can disagree by a few
    seconds. Traces without a wall-clock start are left out of the check,
    with a warning.

    Raises
    ------
    TraceError
        The gap is larger than ``max_gap_s`` seconds.
    """
    intervals = {}
    for trace in traces:
        interval = recording_interval_ns(trace)
        if interval is None:
            log.warning(
                "merge: %s has no wall-clock start time, so whether it was "
                "recorded at the same time as the other traces is not checked",
                trace.name,
            )
        else:
            intervals[trace.name] = interval
    if len(intervals) < 2:
        return
    last_started = max(intervals, key=lambda name: intervals[name][0])
    first_stopped = min(intervals, key=lambda name: intervals[name][1])
    gap_s = (intervals[last_started][0] - intervals[first_stopped][1]) / 1e9
    if gap_s <= 0:
        return
    if gap_s > max_gap_s:
        raise TraceError(
            f"{last_started}: recording started {gap_s:.1f} s after the recording "
            f"of {first_stopped} stopped, more than the maximum gap of "
            f"{max_gap_s:g} s; merge only traces of the same run, or raise "
            "--max-gap if the host clocks disagree"
        )
    log.warning(
        "merge: %s started %.1f s after %s stopped, so the recordings do not "
        "overlap; check that they are of the same run and that the host clocks "
        "agree",
        last_started,
        gap_s,
        first_stopped,
    )


def merge_traces(
    traces: Sequence[Trace], max_gap_s: float = MAX_GAP_S
) -> tuple[pa.Table, dict[str, Any]]:
    """Merge traces of one run recorded on distinct hosts.

    Parameters
    ----------
    traces : sequence of Trace
        At least two traces, each from its own set of hosts.
    max_gap_s : float
        Maximum time in seconds between the recordings, as
        :func:`check_overlap` measures it.

    Returns
    -------
    table : pyarrow.Table
        All rows, trace after trace.
    meta : dict
        Metadata document: the shared labels, ``hosts``, ``requests`` as the
        sum of the traces' counts (each host counts the requests accepted at
        its own trigger socket), ``complete`` only when every trace is, the
        wall-clock span of the recordings when every trace has one, and
        each input's own document under ``sources``.

    Raises
    ------
    TraceError
        Two traces share a host name, give one label different values, or
        were recorded more than ``max_gap_s`` apart.
    """
    if len(traces) < 2:
        raise TraceError("merge: give at least two traces to merge")

    seen: dict[str, str] = {}
    for trace in traces:
        for host in sorted(trace_hosts(trace)):
            if host in seen:
                raise TraceError(
                    f"{trace.name}: host {host!r} also appears in {seen[host]}; "
                    "merge traces of distinct hosts, recorded with distinct host names"
                )
            seen[host] = trace.name

    labels: dict[str, str] = {}
    origin: dict[str, str] = {}
    for trace in traces:
        for key, value in trace.labels.items():
            if key in labels and labels[key] != value:
                raise TraceError(
                    f"{trace.name}: label {key}={value!r} differs from "
                    f"{key}={labels[key]!r} in {origin[key]}; merge only traces "
                    "of the same run"
                )
            labels[key], origin[key] = value, trace.name

    check_overlap(traces, max_gap_s)
    counts = [trace.meta.get("requests") for trace in traces]
    known = [int(c) for c in counts if c is not None]
    meta: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "hosts": sorted(seen),
        "labels": labels,
        "complete": all(bool(t.meta.get("complete", True)) for t in traces),
        "sources": [
            {
                "file": t.name,
                **{k: v for k, v in t.meta.items() if k != "schema_version"},
            }
            for t in traces
        ],
    }
    if known:
        meta["requests"] = sum(known)
    intervals = [recording_interval_ns(t) for t in traces]
    if all(interval is not None for interval in intervals):
        # A merged trace can be merged again, with a third host's trace.
        meta["started_unix_ns"] = min(start for start, _ in intervals)
        meta["stopped_unix_ns"] = max(stop for _, stop in intervals)
    if known and len(known) < len(counts):
        log.info(
            "merge: %d of %d traces carry a request count", len(known), len(counts)
        )

    table = pa.concat_tables([t.table.cast(EVENT_SCHEMA) for t in traces])
    return table, meta
