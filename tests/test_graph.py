"""System graphs built from hand-made traces with known nodes, edges and degrees."""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np
import pytest

from syslrn.errors import TraceError
from syslrn.graph import EXTERNAL, build_graph, merge_traces
from syslrn.trace import Trace, read_trace, table_from_rows, write_trace
from syslrn.trace.schema import FLAG_DRIVER


def _graph(rows, **kwargs):
    return build_graph(table_from_rows(rows), **kwargs)


def _degree_of(graph, host, pid, start):
    for i in range(graph.n_nodes):
        if graph.node_key(i) == (host, pid, start):
            return int(graph.degree()[i])
    raise AssertionError(f"no node {(host, pid, start)}")


def _type_of(graph, host, pid, start):
    for i in range(graph.n_nodes):
        if graph.node_key(i) == (host, pid, start):
            return graph.type_names[graph.type_index[i]]
    raise AssertionError(f"no node {(host, pid, start)}")


def _edges(graph):
    kinds = ("spawn", "ipc", "net")
    return Counter(
        (graph.node_key(u), graph.node_key(v), kinds[k])
        for u, v, k in zip(
            graph.src.tolist(),
            graph.dst.tolist(),
            graph.edge_kind.tolist(),
            strict=True,
        )
    )


def fork(ts, pid, start, ppid, pstart, comm="sh", host="a", **extra):
    return dict(
        ts_ns=ts,
        host=host,
        kind="fork",
        pid=pid,
        start_ns=start,
        ppid=ppid,
        parent_start_ns=pstart,
        comm=comm,
        **extra,
    )


def exec_(ts, pid, start, filename, comm="sh", host="a", **extra):
    return dict(
        ts_ns=ts,
        host=host,
        kind="exec",
        pid=pid,
        start_ns=start,
        comm=comm,
        filename=filename,
        **extra,
    )


def snapshot(pid, start, comm, ppid=None, pstart=None, host="a", **extra):
    return dict(
        ts_ns=1,
        host=host,
        kind="snapshot",
        pid=pid,
        start_ns=start,
        ppid=ppid,
        parent_start_ns=pstart,
        comm=comm,
        **extra,
    )


def tcp(kind, ts, pid, start, laddr, lport, raddr, rport, host="a", netns=1, **extra):
    family = "inet6" if ":" in laddr else "inet"
    return dict(
        ts_ns=ts,
        host=host,
        kind=kind,
        pid=pid,
        start_ns=start,
        family=family,
        laddr=laddr,
        lport=lport,
        raddr=raddr,
        rport=rport,
        netns=netns,
        **extra,
    )


def unix(kind, ts, pid, start, path, sock_id=None, peer_id=None, host="a"):
    return dict(
        ts_ns=ts,
        host=host,
        kind=kind,
        pid=pid,
        start_ns=start,
        family="unix",
        path=path,
        sock_id=sock_id,
        peer_id=peer_id,
    )


# A web server (nginx) that forks a worker, which accepts a TCP client and
# connects to a database over unix and TCP; one connection leaves the host.
WEB_ROWS = [
    snapshot(1, 10, "systemd"),
    snapshot(100, 100, "nginx", ppid=1, pstart=10, filename="/usr/sbin/nginx"),
    snapshot(200, 200, "postgres", ppid=1, pstart=10),
    fork(5, 101, 500, 100, 100, comm="nginx"),
    tcp("accept", 6, 101, 500, "127.0.0.1", 80, "127.0.0.1", 40000),
    tcp("connect", 6, 300, 600, "127.0.0.1", 40000, "127.0.0.1", 80, comm="curl"),
    unix("connect", 7, 101, 500, "/run/pg.sock", sock_id=7001),
    unix("accept", 7, 200, 200, "/run/pg.sock", sock_id=7002, peer_id=7001),
    tcp("connect", 8, 101, 500, "10.0.0.1", 41000, "10.0.0.9", 443),
    dict(ts_ns=9, host="a", kind="request", pid=101, start_ns=500),
    dict(
        ts_ns=10,
        host="a",
        kind="exit",
        pid=101,
        start_ns=500,
        comm="nginx",
        exit_code=0,
    ),
]


def test_web_graph_nodes_and_types():
    graph = _graph(WEB_ROWS)

    processes = [
        graph.node_key(i) for i in range(graph.n_nodes) if not graph.external[i]
    ]
    assert sorted(processes) == sorted(
        [
            ("a", 1, 10),
            ("a", 100, 100),
            ("a", 101, 500),
            ("a", 200, 200),
            ("a", 300, 600),
        ]
    )
    assert _type_of(graph, "a", 101, 500) == "nginx"
    assert _type_of(graph, "a", 300, 600) == "curl"
    assert _type_of(graph, "a", 1, 10) == "systemd"
    assert int(graph.external.sum()) == 1
    assert list(graph.address.values()) == ["inet:10.0.0.9"]


def test_web_graph_edges():
    graph = _graph(WEB_ROWS)

    # Snapshot rows name parents but make no edge: those processes were
    # created before the run.
    assert _edges(graph) == Counter(
        {
            (("a", 100, 100), ("a", 101, 500), "spawn"): 1,
            (("a", 300, 600), ("a", 101, 500), "net"): 1,
            (("a", 101, 500), ("a", 200, 200), "ipc"): 1,
            (("a", 101, 500), (EXTERNAL, "inet:10.0.0.9"), "net"): 1,
        }
    )


def test_web_graph_degrees():
    graph = _graph(WEB_ROWS)

    assert _degree_of(graph, "a", 1, 10) == 0
    assert _degree_of(graph, "a", 100, 100) == 1
    assert _degree_of(graph, "a", 101, 500) == 4
    assert _degree_of(graph, "a", 200, 200) == 1
    assert _degree_of(graph, "a", 300, 600) == 1


def test_request_rows_make_no_node():
    rows = [
        snapshot(1, 10, "init"),
        dict(ts_ns=5, host="a", kind="request", pid=77, start_ns=770),
    ]
    graph = _graph(rows)

    assert graph.n_nodes == 1
    assert graph.node_key(0) == ("a", 1, 10)


def test_label_is_last_exec_basename():
    rows = [
        fork(2, 20, 200, 1, 10, comm="bash"),
        exec_(3, 20, 200, "/usr/bin/python3", comm="bash"),
        exec_(4, 20, 200, "/usr/local/bin/gunicorn", comm="python3"),
    ]
    graph = _graph(rows)

    assert _type_of(graph, "a", 20, 200) == "gunicorn"


def test_exec_of_open_file_labelled_by_comm():
    # fexecve gives the filename /dev/fd/N, and the kernel sets comm to the
    # file's name. A path under a directory fd keeps its basename.
    rows = [
        fork(2, 20, 200, 1, 10, comm="sh"),
        exec_(3, 20, 200, "/dev/fd/3", comm="worker"),
        fork(4, 30, 300, 1, 10, comm="sh"),
        exec_(5, 30, 300, "/dev/fd/3/tool", comm="tool"),
    ]
    graph = _graph(rows)

    assert _type_of(graph, "a", 20, 200) == "worker"
    assert _type_of(graph, "a", 30, 300) == "tool"


def test_fork_child_inherits_label_at_fork_time():
    # The parent runs /bin/sh, forks a child that never execs, then execs
    # /usr/bin/make itself: the child still runs the shell image.
    rows = [
        exec_(2, 10, 100, "/bin/sh", comm="run.sh"),
        fork(3, 11, 110, 10, 100, comm="sh"),
        exec_(4, 10, 100, "/usr/bin/make", comm="sh"),
        fork(5, 12, 120, 10, 100, comm="make"),
    ]
    graph = _graph(rows)

    assert _type_of(graph, "a", 10, 100) == "make"
    assert _type_of(graph, "a", 11, 110) == "sh"
    assert _type_of(graph, "a", 12, 120) == "make"


def test_fork_chain_inherits_through_generations():
    rows = [
        snapshot(10, 100, "postgres", filename="/usr/lib/postgresql/15/bin/postgres"),
        fork(2, 11, 110, 10, 100, comm="postgres"),
        fork(3, 12, 120, 11, 110, comm="postgres"),
        fork(4, 13, 130, 12, 120, comm="postgres"),
    ]
    graph = _graph(rows)

    assert [
        _type_of(graph, "a", p, s) for p, s in ((11, 110), (12, 120), (13, 130))
    ] == ["postgres"] * 3


def test_comm_labels_processes_without_exec():
    # A snapshot's comm is cut to 15 characters by the kernel; without a
    # filename the type is that comm.
    rows = [
        snapshot(5, 50, "systemd-journal"),
        dict(ts_ns=3, host="a", kind="exit", pid=6, start_ns=60, comm="kworker"),
    ]
    graph = _graph(rows)

    assert _type_of(graph, "a", 5, 50) == "systemd-journal"
    assert _type_of(graph, "a", 6, 60) == "kworker"


def test_fork_from_untraced_parent_uses_child_comm():
    rows = [fork(2, 11, 110, 999, 9990, comm="cron")]
    graph = _graph(rows)

    assert graph.n_nodes == 1
    assert _type_of(graph, "a", 11, 110) == "cron"
    assert graph.n_edges == 0


def test_pid_reuse_gives_distinct_nodes():
    rows = [
        snapshot(1, 10, "init"),
        fork(2, 42, 4200, 1, 10, comm="init"),
        exec_(3, 42, 4200, "/usr/bin/first"),
        dict(ts_ns=4, host="a", kind="exit", pid=42, start_ns=4200, comm="first"),
        fork(5, 42, 4500, 1, 10, comm="init"),
        exec_(6, 42, 4500, "/usr/bin/second"),
    ]
    graph = _graph(rows)

    assert graph.n_nodes == 3
    assert _type_of(graph, "a", 42, 4200) == "first"
    assert _type_of(graph, "a", 42, 4500) == "second"
    assert _degree_of(graph, "a", 1, 10) == 2


def test_same_pid_on_two_hosts_is_two_nodes():
    rows = [snapshot(1, 10, "init", host="a"), snapshot(1, 10, "init", host="b")]
    graph = _graph(rows)

    assert graph.n_nodes == 2
    assert graph.type_names == ["init"]


def test_unix_pairs_by_socket_identity():
    rows = [
        snapshot(1, 10, "server"),
        snapshot(2, 20, "client"),
        unix("connect", 5, 2, 20, "/run/s", sock_id=2**63 + 11),
        unix("connect", 6, 2, 20, "/run/s", sock_id=2**63 + 12),
        unix("accept", 7, 1, 10, "/run/s", sock_id=5, peer_id=2**63 + 12),
        unix("accept", 8, 1, 10, "/run/s", sock_id=6, peer_id=2**63 + 11),
    ]
    graph = _graph(rows)

    assert _edges(graph) == Counter({(("a", 2, 20), ("a", 1, 10), "ipc"): 2})
    assert not graph.external.any()


def test_reused_unix_socket_ids_pair_in_time_order():
    # The kernel reuses a closed socket's memory: two clients in a row can
    # connect from sockets with the same id.
    rows = [
        snapshot(1, 10, "server"),
        snapshot(2, 20, "first"),
        snapshot(3, 30, "second"),
        unix("connect", 5, 2, 20, "/run/s", sock_id=77),
        unix("accept", 6, 1, 10, "/run/s", sock_id=88, peer_id=77),
        unix("connect", 7, 3, 30, "/run/s", sock_id=77),
        unix("accept", 8, 1, 10, "/run/s", sock_id=88, peer_id=77),
    ]
    graph = _graph(rows)

    assert _edges(graph) == Counter(
        {
            (("a", 2, 20), ("a", 1, 10), "ipc"): 1,
            (("a", 3, 30), ("a", 1, 10), "ipc"): 1,
        }
    )


def test_unpaired_unix_ends_meet_externals():
    rows = [
        snapshot(2, 20, "client"),
        unix("connect", 5, 2, 20, "/run/a", sock_id=1),
        unix("connect", 6, 2, 20, "/run/a", sock_id=2),
        unix("connect", 7, 2, 20, "/run/b", sock_id=3),
    ]
    graph = _graph(rows)

    assert sorted(graph.address.values()) == ["a/unix:/run/a", "a/unix:/run/b"]
    assert _degree_of(graph, "a", 2, 20) == 3


def test_recurring_four_tuple_pairs_in_time_order():
    # Client port 40000 is reused by two clients in turn.
    rows = [
        snapshot(1, 10, "server"),
        snapshot(2, 20, "first"),
        snapshot(3, 30, "second"),
        tcp("connect", 100, 2, 20, "127.0.0.1", 40000, "127.0.0.1", 80),
        tcp("accept", 101, 1, 10, "127.0.0.1", 80, "127.0.0.1", 40000),
        tcp("connect", 200, 3, 30, "127.0.0.1", 40000, "127.0.0.1", 80),
        tcp("accept", 201, 1, 10, "127.0.0.1", 80, "127.0.0.1", 40000),
    ]
    graph = _graph(rows)

    assert _edges(graph) == Counter(
        {
            (("a", 2, 20), ("a", 1, 10), "net"): 1,
            (("a", 3, 30), ("a", 1, 10), "net"): 1,
        }
    )


def test_ipv4_mapped_accept_pairs_with_ipv4_connect():
    rows = [
        snapshot(1, 10, "server"),
        snapshot(2, 20, "client"),
        tcp("connect", 5, 2, 20, "127.0.0.1", 40000, "127.0.0.1", 8080),
        tcp("accept", 6, 1, 10, "::ffff:127.0.0.1", 8080, "::ffff:127.0.0.1", 40000),
    ]
    graph = _graph(rows)

    assert _edges(graph) == Counter({(("a", 2, 20), ("a", 1, 10), "net"): 1})


def test_loopback_in_other_netns_does_not_pair():
    rows = [
        snapshot(1, 10, "server"),
        snapshot(2, 20, "client"),
        tcp("connect", 5, 2, 20, "127.0.0.1", 40000, "127.0.0.1", 80, netns=1),
        tcp("accept", 6, 1, 10, "127.0.0.1", 80, "127.0.0.1", 40000, netns=2),
    ]
    graph = _graph(rows)

    # Both ends meet the host's one loopback endpoint instead of each other.
    assert _edges(graph) == Counter(
        {
            (("a", 2, 20), (EXTERNAL, "a/inet:127.0.0.1"), "net"): 1,
            ((EXTERNAL, "a/inet:127.0.0.1"), ("a", 1, 10), "net"): 1,
        }
    )


def _host_trace(tmp_path, host, rows, requests=None):
    meta = {"host": host, "labels": {"run": "7"}}
    if requests is not None:
        meta["requests"] = requests
    path = write_trace(tmp_path / f"{host}.parquet", table_from_rows(rows), meta)
    return read_trace(path)


def test_merge_joins_connection_across_hosts(tmp_path):
    web = _host_trace(
        tmp_path,
        "web",
        [
            snapshot(50, 500, "gunicorn", host="web"),
            tcp(
                "connect",
                9,
                50,
                500,
                "10.0.0.1",
                41000,
                "10.0.0.2",
                5432,
                host="web",
                netns=7,
            ),
        ],
        requests=3,
    )
    db = _host_trace(
        tmp_path,
        "db",
        [
            snapshot(50, 500, "postgres", host="db"),
            tcp(
                "accept",
                4,
                50,
                500,
                "10.0.0.2",
                5432,
                "10.0.0.1",
                41000,
                host="db",
                netns=9,
            ),
        ],
        requests=2,
    )
    table, meta = merge_traces([web, db])
    graph = build_graph(Trace(table=table, meta=meta))

    assert _edges(graph) == Counter({(("web", 50, 500), ("db", 50, 500), "net"): 1})
    assert not graph.external.any()
    assert meta["hosts"] == ["db", "web"]
    assert meta["requests"] == 5
    assert meta["labels"] == {"run": "7"}


def test_unmerged_host_traces_meet_externals(tmp_path):
    web = _host_trace(
        tmp_path,
        "web",
        [
            snapshot(50, 500, "gunicorn", host="web"),
            tcp("connect", 9, 50, 500, "10.0.0.1", 41000, "10.0.0.2", 5432, host="web"),
        ],
    )
    graph = build_graph(web)

    assert list(graph.address.values()) == ["inet:10.0.0.2"]


def test_loopback_never_joins_across_hosts(tmp_path):
    a = _host_trace(
        tmp_path,
        "a",
        [
            snapshot(1, 10, "client", host="a"),
            tcp("connect", 5, 1, 10, "127.0.0.1", 40000, "127.0.0.1", 80, host="a"),
        ],
    )
    b = _host_trace(
        tmp_path,
        "b",
        [
            snapshot(1, 10, "server", host="b"),
            tcp("accept", 6, 1, 10, "127.0.0.1", 80, "127.0.0.1", 40000, host="b"),
        ],
    )
    table, meta = merge_traces([a, b])
    graph = build_graph(Trace(table=table, meta=meta))

    assert sorted(graph.address.values()) == ["a/inet:127.0.0.1", "b/inet:127.0.0.1"]


def test_merge_rejects_shared_host(tmp_path):
    first = _host_trace(tmp_path, "a", [snapshot(1, 10, "x", host="a")])
    second = read_trace(first.path)

    with pytest.raises(TraceError, match="host 'a' also appears"):
        merge_traces([first, second])


def test_merge_rejects_conflicting_labels(tmp_path):
    a = _host_trace(tmp_path, "a", [snapshot(1, 10, "x", host="a")])
    b = _host_trace(tmp_path, "b", [snapshot(1, 10, "x", host="b")])
    b.meta["labels"] = {"run": "8"}

    with pytest.raises(TraceError, match="label run='8' differs"):
        merge_traces([a, b])


#: A wall-clock time in seconds since the epoch, for recordings in tests.
EPOCH_S = 1_700_000_000


def _recorded(trace, start_s, stop_s=None):
    """Give a trace the wall-clock start and stop, in seconds after EPOCH_S."""
    trace.meta["started_unix_ns"] = int((EPOCH_S + start_s) * 1e9)
    if stop_s is not None:
        trace.meta["stopped_unix_ns"] = int((EPOCH_S + stop_s) * 1e9)
    return trace


def _pair(tmp_path, a_times, b_times):
    a = _host_trace(tmp_path, "a", [snapshot(1, 10, "x", host="a")])
    b = _host_trace(tmp_path, "b", [snapshot(1, 10, "x", host="b")])
    return _recorded(a, *a_times), _recorded(b, *b_times)


def _merge_warnings(caplog):
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and r.getMessage().startswith("merge:")
    ]


def test_merge_overlapping_keeps_span(tmp_path, caplog):
    a, b = _pair(tmp_path, (0, 10), (5, 20))

    with caplog.at_level(logging.WARNING, logger="syslrn"):
        _, meta = merge_traces([a, b])

    assert _merge_warnings(caplog) == []
    assert meta["started_unix_ns"] == a.meta["started_unix_ns"]
    assert meta["stopped_unix_ns"] == b.meta["stopped_unix_ns"]


def test_merge_warns_of_small_gap(tmp_path, caplog):
    a, b = _pair(tmp_path, (0, 10), (15, 20))

    with caplog.at_level(logging.WARNING, logger="syslrn"):
        merge_traces([a, b])

    warnings = _merge_warnings(caplog)
    assert len(warnings) == 1
    assert "b.parquet started 5.0 s after" in warnings[0]
    assert "a.parquet stopped" in warnings[0]
    assert "do not overlap" in warnings[0]


def test_merge_rejects_large_gap(tmp_path):
    a, b = _pair(tmp_path, (3600, 3610), (0, 10))

    with pytest.raises(TraceError) as error:
        merge_traces([a, b])
    message = str(error.value)
    assert message.startswith(f"{a.name}: recording started 3590.0 s after")
    assert f"the recording of {b.name} stopped" in message
    assert "more than the maximum gap of 60 s" in message


def test_merge_max_gap_zero_rejects_any_gap(tmp_path):
    a, b = _pair(tmp_path, (0, 10), (10.5, 20))

    with pytest.raises(TraceError, match="more than the maximum gap of 0 s"):
        merge_traces([a, b], max_gap_s=0)
    merge_traces([a, b], max_gap_s=1)


def test_merge_interrupted_recording_ends_at_last_event(tmp_path):
    start_ns = 5_000_000_000
    rows = [
        dict(ts_ns=start_ns + 1, host="a", kind="snapshot", pid=1, start_ns=10),
        dict(
            ts_ns=start_ns + 100_000_000_000, host="a", kind="exit", pid=1, start_ns=10
        ),
    ]
    path = write_trace(
        tmp_path / "a.parquet",
        table_from_rows(rows),
        {"host": "a", "labels": {}, "started_ns": start_ns, "complete": False},
    )
    interrupted = _recorded(read_trace(path), 0)
    near = _host_trace(tmp_path, "b", [snapshot(1, 10, "x", host="b")])
    far = _host_trace(tmp_path, "c", [snapshot(1, 10, "x", host="c")])

    merge_traces([interrupted, _recorded(near, 90, 200)])
    with pytest.raises(TraceError, match="started 100.0 s after"):
        merge_traces([interrupted, _recorded(far, 200, 300)])


def test_merge_without_wall_clock_warns(tmp_path, caplog):
    a = _host_trace(tmp_path, "a", [snapshot(1, 10, "x", host="a")])
    b = _recorded(_host_trace(tmp_path, "b", [snapshot(1, 10, "x", host="b")]), 0, 1)

    with caplog.at_level(logging.WARNING, logger="syslrn"):
        _, meta = merge_traces([a, b])

    warnings = _merge_warnings(caplog)
    assert len(warnings) == 1
    assert f"{a.name} has no wall-clock start time" in warnings[0]
    assert "started_unix_ns" not in meta


def _own_event_degrees(rows):
    """Count each process's degree from its own events only, as a probe would."""
    nodes = {
        (r["host"], r["pid"], r["start_ns"]) for r in rows if r["kind"] != "request"
    }
    degree = Counter()
    parented = set()
    for r in rows:
        me = (r["host"], r["pid"], r["start_ns"])
        if r["kind"] in ("fork", "snapshot") and r.get("ppid") is not None:
            parent = (r["host"], r["ppid"], r["parent_start_ns"])
            if parent in nodes and parent != me and me not in parented:
                parented.add(me)
                degree[me] += 1
                degree[parent] += 1
        if r["kind"] in ("connect", "accept"):
            degree[me] += 1
    return nodes, degree


def _random_rows(seed, n_processes=300):
    rng = np.random.default_rng(seed)
    rows = [snapshot(1, 10, "init")]
    alive = [(1, 10)]
    ts = 100
    for pid in range(2, n_processes + 2):
        ts += 10
        parent = alive[int(rng.integers(len(alive)))]
        if rng.random() < 0.1:
            parent = (99999, 1)  # a parent outside the trace
        start = ts
        rows.append(fork(ts, pid, start, *parent, comm="w"))
        if rng.random() < 0.7:
            rows.append(exec_(ts + 1, pid, start, f"/usr/bin/t{int(rng.integers(5))}"))
        alive.append((pid, start))
        for _ in range(int(rng.integers(0, 3))):
            peer = alive[int(rng.integers(len(alive)))]
            port = int(rng.integers(30000, 30050))
            rows.append(
                tcp("connect", ts + 2, pid, start, "127.0.0.1", port, "127.0.0.1", 80)
            )
            if rng.random() < 0.6:
                rows.append(
                    tcp("accept", ts + 3, *peer, "127.0.0.1", 80, "127.0.0.1", port)
                )
        if rng.random() < 0.3:
            rows.append(unix("connect", ts + 4, pid, start, "/run/u", sock_id=pid))
            rows.append(
                unix(
                    "accept", ts + 5, 1, 10, "/run/u", sock_id=10**6 + pid, peer_id=pid
                )
            )
    return rows


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_degree_equals_own_event_count(seed):
    rows = _random_rows(seed)
    graph = _graph(rows)
    nodes, expected = _own_event_degrees(rows)
    degree = graph.degree()

    observed = {
        graph.node_key(i): int(degree[i])
        for i in range(graph.n_nodes)
        if not graph.external[i]
    }
    assert set(observed) == nodes
    assert observed == {n: expected.get(n, 0) for n in nodes}


def test_external_degree_counts_unpaired_ends():
    rows = _random_rows(3)
    graph = _graph(rows)
    unpaired = graph.degree()[graph.external].sum()
    edges_to_external = int(
        (graph.external[graph.src] | graph.external[graph.dst]).sum()
    )

    assert unpaired == edges_to_external
    assert edges_to_external > 0


def test_networkx_view_matches_arrays():
    graph = _graph(WEB_ROWS)
    view = graph.to_networkx()

    assert view.number_of_nodes() == graph.n_nodes
    assert view.number_of_edges() == graph.n_edges
    degree = graph.degree()
    assert {graph.node_key(i): int(degree[i]) for i in range(graph.n_nodes)} == dict(
        view.degree()
    )
    assert view.nodes[("a", 101, 500)]["node_type"] == "nginx"


def test_driver_flags_and_driven_label():
    rows = [
        snapshot(1, 10, "server"),
        dict(exec_(2, 5, 50, "/usr/bin/client"), flags=FLAG_DRIVER),
        dict(
            tcp("connect", 3, 5, 50, "127.0.0.1", 40000, "127.0.0.1", 80),
            flags=FLAG_DRIVER,
        ),
        tcp("accept", 4, 1, 10, "127.0.0.1", 80, "127.0.0.1", 40000),
    ]
    trace = Trace(table=table_from_rows(rows), meta={"labels": {"driven": "true"}})
    graph = build_graph(trace)

    assert graph.driven
    assert graph.driver.tolist() == [False, True]
    assert not build_graph(table_from_rows(rows)).driven


def test_graph_of_corrupt_trace_names_file(tmp_path):
    path = tmp_path / "broken.parquet"
    write_trace(path, table_from_rows(WEB_ROWS), {"host": "a"})
    path.write_bytes(path.read_bytes()[:200])

    with pytest.raises(TraceError, match="broken.parquet"):
        read_trace(path)
