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


def trace_hosts(trace: Trace) -> set[str]:
    """Return the host names that occur in a trace's rows and metadata."""
    column = trace.table.column("host")
    hosts = {str(h) for h in pc.unique(column).to_pylist() if h is not None}
    hosts.update(str(h) for h in trace.meta.get("hosts") or [])
    if trace.meta.get("host"):
        hosts.add(str(trace.meta["host"]))
    return hosts


def merge_traces(traces: Sequence[Trace]) -> tuple[pa.Table, dict[str, Any]]:
    """Merge traces of one run recorded on distinct hosts.

    Parameters
    ----------
    traces : sequence of Trace
        At least two traces, each from its own set of hosts.

    Returns
    -------
    table : pyarrow.Table
        All rows, trace after trace.
    meta : dict
        Metadata document: the shared labels, ``hosts``, ``requests`` as the
        sum of the traces' counts (each host counts the requests accepted at
        its own trigger socket), ``complete`` only when every trace is, and
        each input's own document under ``sources``.

    Raises
    ------
    TraceError
        Two traces share a host name, or give one label different values.
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
    if known and len(known) < len(counts):
        log.info(
            "merge: %d of %d traces carry a request count", len(known), len(counts)
        )

    table = pa.concat_tables([t.table.cast(EVENT_SCHEMA) for t in traces])
    return table, meta
