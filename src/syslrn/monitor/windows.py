"""The offline counterpart of a monitor window: a trace cut to the window.

A window of the online monitor counts the processes alive at its open and
the events inside it. Cutting a full recording to the same bounds gives the
run that the window stands for: the processes alive at the open become
snapshot rows typed as they were at that moment, and the events between
the open and the close are kept. Its bag-of-nodes features are the ones the
monitor must count in the kernel.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from syslrn.graph import build_graph
from syslrn.trace.io import Trace
from syslrn.trace.schema import EVENT_SCHEMA, EXIT, REQUEST, SNAPSHOT


def _process_keys(table: pa.Table) -> pa.Table:
    return table.select(["host", "pid", "start_ns"]).cast(
        pa.schema(
            [("host", pa.string()), ("pid", pa.int32()), ("start_ns", pa.uint64())]
        )
    )


def cut_window(trace: Trace, open_ns: int, close_ns: int) -> Trace:
    """Return the run of ``trace`` between ``open_ns`` and ``close_ns``.

    Both bounds are CLOCK_BOOTTIME nanoseconds of the recording host, as the
    monitor reports them; events at either bound belong to the window.
    """
    table = trace.table
    ts = table.column("ts_ns")
    open_ns = _opening_request(table, open_ns)
    before = table.filter(pc.less(ts, open_ns))
    inside = table.filter(
        pc.and_(pc.greater_equal(ts, open_ns), pc.less_equal(ts, close_ns))
    )

    alive = _alive_at(before)
    # Types are those of the whole history before the open: a child that
    # never exec'd takes the type its parent had, even a parent long gone.
    graph = build_graph(before, driven=False)
    types = {
        graph.node_key(i)[:3]: graph.type_names[graph.type_index[i]]
        for i in range(graph.n_nodes)
        if not graph.external[i]
    }
    rows = []
    for host, pid, start in alive:
        rows.append(
            {
                "ts_ns": open_ns,
                "host": host,
                "kind": SNAPSHOT,
                "pid": pid,
                "start_ns": start,
                "comm": types.get((host, pid, start), "?"),
                "flags": 0,
            }
        )
    snapshot = (
        pa.Table.from_pylist(rows, schema=EVENT_SCHEMA)
        if rows
        else (EVENT_SCHEMA.empty_table())
    )
    kinds = inside.column("kind").cast(pa.string())
    requests = pc.sum(pc.equal(kinds, REQUEST).cast(pa.int64())).as_py() or 0

    meta = dict(trace.meta)
    meta.update(requests=requests, window={"open_ns": open_ns, "close_ns": close_ns})
    meta["labels"] = {k: v for k, v in (trace.labels or {}).items() if k != "driven"}
    cut = pa.concat_tables([snapshot, inside.cast(EVENT_SCHEMA)])
    return Trace(table=cut, meta=meta, path=trace.path)


#: The recorder and the monitor read the clock in two programs on the same
#: tracepoint, microseconds apart, so the trace's row of the request that
#: opened a window may come just before the window's open.
CLOCK_SKEW_NS = 1_000_000


def _opening_request(table: pa.Table, open_ns: int) -> int:
    """Return the time the trace gives the request that opened the window."""
    kinds = table.column("kind").cast(pa.string())
    ts = table.column("ts_ns")
    near = pc.and_(
        pc.equal(kinds, REQUEST),
        pc.and_(
            pc.greater_equal(ts, open_ns - CLOCK_SKEW_NS),
            pc.less_equal(ts, open_ns + CLOCK_SKEW_NS),
        ),
    )
    candidates = pc.filter(ts, near)
    if len(candidates) == 0:
        return open_ns
    return min(open_ns, pc.min(candidates).as_py())


def _alive_at(before: pa.Table) -> list[tuple[str, int, int]]:
    """Return the processes seen before the open that had not exited."""
    keys = _process_keys(before)
    kinds = before.column("kind").cast(pa.string()).to_numpy(zero_copy_only=False)
    hosts = keys.column("host").to_numpy(zero_copy_only=False)
    pids = keys.column("pid").to_numpy()
    starts = keys.column("start_ns").to_numpy()
    seen = dict.fromkeys(zip(hosts, pids.tolist(), starts.tolist(), strict=True))
    is_exit = kinds == EXIT
    exited = set(
        zip(
            hosts[is_exit],
            pids[is_exit].tolist(),
            starts[is_exit].tolist(),
            strict=True,
        )
    )
    return [key for key in seen if key not in exited]
