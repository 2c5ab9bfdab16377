"""Benchmark the learning core: graph building, training and detection.

Run from the repository root::

    PYTHONPATH=src .venv/bin/python bench/learn_bench.py

Three measurements, on generated data:

1. graph building: a trace of about a million events (forks, execs, exits,
   TCP and unix connections over 150 executable names) is written to
   Parquet, read back and turned into a system graph. The rate is in events
   per second, reading included.
2. training: bag-of-nodes rows of 1,000 runs with 150 node types (300
   features) are fitted by the linear and the Huber model, packaged as
   model files. Beside it, the time to embed 1,000 small graphs.
3. detection: ``Model.detect`` on one embedded run, averaged over many calls.
4. training from files: what ``syslrn train`` does with 1,000 small trace
   files (reading, graph building, bag-of-nodes, fitting).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from syslrn.embed import BagOfNodes
from syslrn.evaluate.runs import load_graph, resolve_runs
from syslrn.graph import build_graph
from syslrn.model import HuberModel, LinearModel, train_model
from syslrn.trace import read_trace, write_trace
from syslrn.trace.schema import EVENT_SCHEMA


def generate_trace(n_events: int, n_types: int, seed: int = 0) -> pa.Table:
    """Return a trace table of about ``n_events`` rows, built column-wise.

    Per process: a fork row, an exec row (for 70% of them), an exit row, and
    on average 0.3 TCP and 0.1 unix connections, each with both ends traced.
    """
    rng = np.random.default_rng(seed)
    # Rows per process: 1 fork + 0.7 exec + 1 exit + 2 * (0.3 + 0.1) ends.
    n_proc = int(n_events / 3.5)
    pid = np.arange(2, n_proc + 2, dtype=np.int32)
    start = np.arange(n_proc, dtype=np.uint64) * 1000 + 10_000
    parent = (rng.random(n_proc) * np.arange(n_proc)).astype(np.int64)
    kind_type = rng.integers(0, n_types, n_proc)
    names = np.array([f"exe{i:03d}" for i in range(n_types)], dtype=object)

    columns: dict[str, list] = {name: [] for name in EVENT_SCHEMA.names}

    def add(kind: str, rows: np.ndarray, ts: np.ndarray, **values) -> None:
        n = len(rows)
        columns["ts_ns"].append(ts.astype(np.uint64))
        columns["host"].append(np.full(n, "bench", dtype=object))
        columns["kind"].append(np.full(n, kind, dtype=object))
        columns["pid"].append(pid[rows])
        columns["start_ns"].append(start[rows])
        columns["flags"].append(np.zeros(n, dtype=np.uint8))
        for name in EVENT_SCHEMA.names:
            if name in ("ts_ns", "host", "kind", "pid", "start_ns", "flags"):
                continue
            columns[name].append(values.get(name, np.full(n, None, dtype=object)))

    every = np.arange(n_proc)
    # The first process's parent is pid 1, which the trace does not contain.
    ppid = pid[parent]
    pstart = start[parent]
    ppid[0], pstart[0] = 1, 1
    add(
        "fork",
        every,
        start,
        ppid=ppid,
        parent_start_ns=pstart,
        comm=names[kind_type[parent]],
    )
    execs = every[rng.random(n_proc) < 0.7]
    add(
        "exec",
        execs,
        start[execs] + 1,
        comm=names[kind_type[parent[execs]]],
        filename=np.array([f"/usr/bin/{n}" for n in names], dtype=object)[
            kind_type[execs]
        ],
    )
    add(
        "exit",
        every,
        start + 900,
        comm=names[kind_type],
        exit_code=np.zeros(n_proc, np.int32),
    )

    clients = every[rng.random(n_proc) < 0.3]
    servers = rng.integers(0, n_proc, len(clients))
    ports = (40000 + np.arange(len(clients)) % 20000).astype(np.uint16)
    loop = np.full(len(clients), "127.0.0.1", dtype=object)
    http = np.full(len(clients), 80, dtype=np.uint16)
    netns = np.ones(len(clients), dtype=np.uint32)
    inet = np.full(len(clients), "inet", dtype=object)
    add(
        "connect",
        clients,
        start[clients] + 2,
        family=inet,
        laddr=loop,
        lport=ports,
        raddr=loop,
        rport=http,
        netns=netns,
    )
    add(
        "accept",
        servers,
        start[clients] + 3,
        family=inet,
        laddr=loop,
        lport=http,
        raddr=loop,
        rport=ports,
        netns=netns,
    )

    unix_clients = every[rng.random(n_proc) < 0.1]
    unix_servers = rng.integers(0, n_proc, len(unix_clients))
    sock = np.arange(len(unix_clients), dtype=np.uint64) * 2 + 1
    unix = np.full(len(unix_clients), "unix", dtype=object)
    path = np.full(len(unix_clients), "/run/bench.sock", dtype=object)
    add(
        "connect",
        unix_clients,
        start[unix_clients] + 4,
        family=unix,
        path=path,
        sock_id=sock,
    )
    add(
        "accept",
        unix_servers,
        start[unix_clients] + 5,
        family=unix,
        path=path,
        sock_id=sock + 1,
        peer_id=sock,
    )

    arrays = {}
    for field in EVENT_SCHEMA:
        values = np.concatenate(columns[field.name])
        target = (
            field.type.value_type if pa.types.is_dictionary(field.type) else field.type
        )
        array = pa.array(values, type=target, from_pandas=True)
        arrays[field.name] = (
            array.dictionary_encode() if pa.types.is_dictionary(field.type) else array
        )
    table = pa.table(arrays).cast(EVENT_SCHEMA)
    return table.sort_by("ts_ns")


def bench_graph(n_events: int, n_types: int, workdir: Path) -> dict:
    table = generate_trace(n_events, n_types)
    path = write_trace(
        workdir / "bench.parquet", table, {"host": "bench", "requests": 1}
    )

    started = time.perf_counter()
    trace = read_trace(path)
    read_s = time.perf_counter() - started
    started = time.perf_counter()
    graph = build_graph(trace)
    build_s = time.perf_counter() - started
    total = read_s + build_s
    return {
        "events": table.num_rows,
        "nodes": graph.n_nodes,
        "edges": graph.n_edges,
        "read_s": read_s,
        "build_s": build_s,
        "events_per_s": table.num_rows / total,
    }


def synthetic_rows(n_runs: int, n_types: int, seed: int = 0):
    """Return bag-of-nodes rows where a third of the types follow requests."""
    rng = np.random.default_rng(seed)
    requests = rng.integers(10, 1000, n_runs)
    rows = []
    for r in requests:
        row = {}
        for t in range(n_types):
            if t % 3 == 0:
                count = (t % 7 + 1) * r + rng.integers(-2, 3)
            else:
                count = rng.integers(1, 20)
            row[f"count:exe{t:03d}"] = float(count)
            row[f"degree:exe{t:03d}"] = float(2 * count + rng.integers(0, 3))
        rows.append(row)
    return rows, requests.tolist()


def bench_training(n_runs: int, n_types: int) -> dict:
    rows, requests = synthetic_rows(n_runs, n_types)
    results = {"runs": n_runs, "features": 2 * n_types}
    for estimator in (LinearModel(), HuberModel()):
        started = time.perf_counter()
        model = train_model(
            rows,
            requests,
            estimator=estimator,
            embedding={"name": "bag-of-nodes", "params": {}},
            describe=BagOfNodes().describe,
        )
        results[f"{estimator.name}_s"] = time.perf_counter() - started
        results[f"{estimator.name}_kept"] = len(model.kept_features)
    return results


def bench_embedding(n_runs: int, n_types: int) -> dict:
    """Time building and embedding ``n_runs`` small graphs held in memory."""
    graphs = [generate_trace(600, n_types, seed=i) for i in range(min(n_runs, 50))]
    embedding = BagOfNodes()
    started = time.perf_counter()
    for i in range(n_runs):
        embedding.features(build_graph(graphs[i % len(graphs)]))
    elapsed = time.perf_counter() - started
    return {
        "runs": n_runs,
        "events_per_run": graphs[0].num_rows,
        "graph_and_embed_s": elapsed,
    }


def bench_detection(n_types: int, calls: int = 20_000) -> dict:
    rows, requests = synthetic_rows(200, n_types)
    model = train_model(
        rows,
        requests,
        estimator=LinearModel(),
        embedding={"name": "bag-of-nodes", "params": {}},
        describe=BagOfNodes().describe,
    )
    row, count = rows[0], requests[0]
    started = time.perf_counter()
    for _ in range(calls):
        model.detect(row, count)
    per_run = (time.perf_counter() - started) / calls
    return {
        "kept": len(model.kept_features),
        "features_in_run": len(row),
        "detect_ms": per_run * 1e3,
    }


def bench_train_files(n_runs: int, n_types: int, workdir: Path) -> dict:
    """Time training from ``n_runs`` trace files, as ``syslrn train`` runs it."""
    rng = np.random.default_rng(1)
    tables = [generate_trace(600, n_types, seed=i) for i in range(20)]
    paths = [
        write_trace(
            workdir / f"run-{i:04d}.parquet",
            tables[i % len(tables)],
            {"host": "bench", "requests": int(rng.integers(10, 100))},
        )
        for i in range(n_runs)
    ]
    embedding = BagOfNodes()
    started = time.perf_counter()
    runs = resolve_runs(paths).runs
    rows = [embedding.features(load_graph(r)) for r in runs]
    train_model(
        rows,
        [r.requests for r in runs],
        estimator=LinearModel(),
        embedding={"name": embedding.name, "params": embedding.get_params()},
        describe=embedding.describe,
    )
    return {
        "runs": n_runs,
        "events_per_run": tables[0].num_rows,
        "seconds": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--types", type=int, default=150)
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as workdir:
        results = {
            "graph": bench_graph(args.events, args.types, Path(workdir)),
            "training": bench_training(args.runs, args.types),
            "embedding": bench_embedding(args.runs, args.types),
            "detection": bench_detection(args.types),
            "train_files": bench_train_files(args.runs, args.types, Path(workdir)),
        }
    if args.json:
        print(json.dumps(results, indent=2))
        return
    g, t, e, d = (
        results["graph"],
        results["training"],
        results["embedding"],
        results["detection"],
    )
    f = results["train_files"]
    print(
        f"graph building: {g['events']} events -> {g['nodes']} nodes, {g['edges']} edges; "
        f"read {g['read_s']:.2f} s + build {g['build_s']:.2f} s = "
        f"{g['events_per_s']:,.0f} events/s"
    )
    print(
        f"training: {t['runs']} runs x {t['features']} features; linear "
        f"{t['linear_s']:.2f} s ({t['linear_kept']} kept), huber {t['huber_s']:.2f} s "
        f"({t['huber_kept']} kept)"
    )
    print(
        f"graph + bag-of-nodes: {e['runs']} runs of {e['events_per_run']} events in "
        f"{e['graph_and_embed_s']:.2f} s"
    )
    print(f"detection: {d['detect_ms']:.3f} ms per run ({d['kept']} kept features)")
    print(
        f"training from files: {f['runs']} traces of {f['events_per_run']} events in "
        f"{f['seconds']:.2f} s"
    )


if __name__ == "__main__":
    main()
