"""Runs as the learning commands take them: traces, campaigns and feature tables.

A run is one recording of the application (or one row of a feature table)
with its request count and labels:

- ``phase``: ``startup``, ``idle`` or ``workload``. Only workload runs (and
  runs without a phase) are fitted, detected and evaluated; the others
  class node types.
- ``fault`` and ``failure``: a run is a failure run when its ``failure``
  label is true, or, without one, when its ``fault`` label is set to
  anything but ``none``.

A campaign directory contains ``index.csv`` with at least the columns ``id``,
``phase``, ``requests``, ``fault``, ``failure`` and ``trace`` (the trace
path relative to the directory).
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from syslrn.errors import SyslrnError, TraceError
from syslrn.graph import SystemGraph, build_graph
from syslrn.text import format_count
from syslrn.trace.io import Trace, journal_path, read_meta, read_trace
from syslrn.trace.schema import METADATA_KEY, REQUEST

log = logging.getLogger(__name__)

CAMPAIGN_INDEX = "index.csv"
CAMPAIGN_COLUMNS = ("id", "phase", "requests", "fault", "failure", "trace")
#: Fault label of a run without an injected fault.
NO_FAULT = "none"
WORKLOAD = "workload"

_TABLE_SUFFIXES = {".csv": ",", ".tsv": "\t", ".tab": "\t"}
_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no")


@dataclass
class TableOptions:
    """Column names of a feature table and the label value of failure-free runs."""

    request_column: str = "requests"
    label_column: str = "label"
    normal_label: str = NO_FAULT
    id_column: str = "id"


@dataclass
class Run:
    """One run: where its events are (or its features), and its labels.

    ``duration_s`` and ``max_request_gap_s`` are known once
    :func:`load_graph` has read the trace.
    """

    name: str
    path: Path | None = None
    requests: int | None = None
    labels: dict[str, str] = field(default_factory=dict)
    phase: str | None = None
    fault: str | None = None
    failure: bool = False
    features: dict[str, float] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    #: The campaign directory that lists the run, if any.
    campaign: Path | None = None
    graph: SystemGraph | None = None
    duration_s: float | None = None
    max_request_gap_s: float | None = None

    @property
    def is_experiment(self) -> bool:
        """Whether the run is a workload run (the ones fitted and judged)."""
        return self.phase in (None, "", WORKLOAD)

    @property
    def trigger(self) -> str | None:
        return self.meta.get("trigger") or self.labels.get("trigger")


@dataclass
class RunSet:
    """The runs of the inputs, in a stable order, and their kind."""

    runs: list[Run]
    #: ``"traces"`` or ``"table"``.
    kind: str
    #: The table's feature columns, for a table.
    feature_columns: list[str] = field(default_factory=list)

    def experiments(self) -> list[Run]:
        return [r for r in self.runs if r.is_experiment]

    def phase(self, phase: str) -> list[Run]:
        return [r for r in self.runs if r.phase == phase]


def resolve_runs(
    paths: Sequence[str | Path], options: TableOptions | None = None
) -> RunSet:
    """Turn command-line inputs into runs.

    Each input is a trace file, a campaign directory (with ``index.csv``),
    or a feature table (``.csv``, ``.tsv``, or a Parquet file without trace
    metadata). Traces and campaigns mix; a table comes alone.

    Raises
    ------
    SyslrnError
        An input is missing or of an unknown kind, or tables and traces are
        mixed. TraceError when a trace's metadata is unreadable.
    """
    options = options or TableOptions()
    if not paths:
        raise SyslrnError(
            "no runs given; give trace files, a campaign directory or a feature table"
        )
    tables, traces = [], []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            traces.extend(read_campaign(path))
        elif _is_table(path):
            tables.append(path)
        else:
            traces.append(_trace_run(path))
    if tables and (traces or len(tables) > 1):
        raise SyslrnError(
            f"{tables[0]}: a feature table must be the only input; give it alone"
        )
    if tables:
        runs, columns = read_feature_table(tables[0], options)
        return RunSet(runs=runs, kind="table", feature_columns=columns)
    traces.sort(key=lambda r: (r.name, str(r.path)))
    return RunSet(runs=traces, kind="traces")


def _is_table(path: Path) -> bool:
    if path.suffix.lower() in _TABLE_SUFFIXES:
        return True
    if path.suffix.lower() != ".parquet" or not path.exists():
        return False
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise TraceError(
            f"{path}: not a readable Parquet file ({exc}); the file is truncated or corrupt"
        ) from None
    return METADATA_KEY not in (schema.metadata or {})


def _trace_run(path: Path) -> Run:
    if not path.exists() and not journal_path(path).exists():
        raise TraceError(f"{path}: trace file not found")
    meta = read_meta(path)
    labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
    requests = Trace(table=pa.table({}), meta=meta, path=path).requests
    fault = labels.get("fault")
    failure = (
        _parse_bool(labels["failure"], f"{path}: label failure")
        if "failure" in labels
        else fault not in (None, "", NO_FAULT)
    )
    return Run(
        name=str(path),
        path=path,
        requests=requests,
        labels=labels,
        phase=labels.get("phase") or None,
        fault=fault,
        failure=failure,
        meta=meta,
    )


def _parse_bool(text: str, field_name: str) -> bool:
    value = str(text).strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise SyslrnError(f"{field_name}={text!r} is not true or false")


def read_campaign(directory: Path) -> list[Run]:
    """Read a campaign directory's ``index.csv`` into runs sorted by id."""
    index = directory / CAMPAIGN_INDEX
    if not index.is_file():
        raise SyslrnError(
            f"{directory}: directory has no {CAMPAIGN_INDEX}; give trace files or a "
            "campaign directory"
        )
    with index.open(newline="") as stream:
        reader = csv.DictReader(stream)
        missing = [c for c in CAMPAIGN_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise SyslrnError(f"{index}: missing columns {missing}")
        rows = list(reader)

    runs = []
    for line, row in enumerate(rows, start=2):
        where = f"{index}: line {line}"
        requests = None
        if (row["requests"] or "").strip():
            try:
                requests = int(row["requests"])
            except ValueError:
                raise SyslrnError(
                    f"{where}: requests={row['requests']!r} is not an integer"
                ) from None
        fault = (row["fault"] or "").strip() or None
        labels = {k: v for k, v in row.items() if k not in ("trace",) and v is not None}
        runs.append(
            Run(
                name=row["id"],
                path=directory / row["trace"],
                requests=requests,
                labels=labels,
                phase=(row["phase"] or "").strip() or None,
                fault=fault,
                failure=_parse_bool(row["failure"], f"{where}: failure"),
                campaign=directory,
            )
        )
    runs.sort(key=lambda r: r.name)
    return runs


def read_feature_table(
    path: Path, options: TableOptions
) -> tuple[list[Run], list[str]]:
    """Read a feature table: one row per run, numeric feature columns.

    A blank feature cell counts as 0, like a node type absent from a run.

    Returns
    -------
    runs : list of Run
    feature_columns : list of str
    """
    table = _read_table(path)
    names = table.column_names
    if options.request_column not in names:
        raise SyslrnError(
            f"{path}: no request column {options.request_column!r} (columns: "
            f"{', '.join(names)}); name it with --request-column"
        )
    reserved = {
        options.request_column,
        options.label_column,
        options.id_column,
        "phase",
    }
    columns = [
        n
        for n in names
        if n not in reserved
        and (
            pa.types.is_integer(table.schema.field(n).type)
            or pa.types.is_floating(table.schema.field(n).type)
        )
    ]
    if not columns:
        raise SyslrnError(
            f"{path}: no numeric feature columns besides the request column"
        )

    n = table.num_rows
    ids = _string_column(table, options.id_column) or [f"row {i + 1}" for i in range(n)]
    requests = _request_column(table, options.request_column, ids, path)
    labels = _string_column(table, options.label_column)
    phases = _string_column(table, "phase")
    if labels is not None and any(v is None for v in labels):
        blank = [ids[i] for i, v in enumerate(labels) if v is None]
        raise SyslrnError(
            f"{path}: rows {_few(blank)} have no {options.label_column!r} value"
        )
    if labels is None:
        log.info(
            "%s: no label column %r; every row counts as failure-free",
            path,
            options.label_column,
        )

    values = np.column_stack(
        [
            pc.fill_null(table.column(c), 0).to_numpy().astype(np.float64)
            for c in columns
        ]
    )
    runs = []
    for i in range(n):
        label = labels[i] if labels is not None else options.normal_label
        failure = label != options.normal_label
        runs.append(
            Run(
                name=ids[i],
                path=path,
                requests=requests[i],
                labels={options.label_column: label},
                phase=phases[i] if phases is not None else None,
                fault=label if failure else None,
                failure=failure,
                features=dict(zip(columns, values[i].tolist(), strict=True)),
            )
        )
    return runs, columns


def _read_table(path: Path) -> pa.Table:
    if not path.exists():
        raise SyslrnError(f"{path}: feature table not found")
    delimiter = _TABLE_SUFFIXES.get(path.suffix.lower())
    try:
        if delimiter is None:
            return pq.read_table(path)
        return pacsv.read_csv(
            path, parse_options=pacsv.ParseOptions(delimiter=delimiter)
        )
    except (pa.ArrowInvalid, OSError) as exc:
        raise SyslrnError(f"{path}: not a readable feature table ({exc})") from None


def _string_column(table: pa.Table, name: str) -> list[str | None] | None:
    if name not in table.column_names:
        return None
    return [
        None if v is None else str(v)
        for v in table.column(name).cast(pa.string()).to_pylist()
    ]


def _request_column(
    table: pa.Table, name: str, ids: list, path: Path
) -> list[int | None]:
    requests: list[int | None] = []
    for run, value in zip(ids, table.column(name).to_pylist(), strict=True):
        if value is None:
            requests.append(None)
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = float("nan")
        if not number.is_integer():
            raise SyslrnError(f"{path}: {run}: {name}={value!r} is not a whole number")
        requests.append(int(number))
    return requests


def _few(names: Sequence[str], limit: int = 5) -> str:
    listed = ", ".join(names[:limit])
    if len(names) > limit:
        listed += f" and {len(names) - limit} more"
    return listed


def require_requests(runs: Sequence[Run]) -> None:
    """Raise SyslrnError naming the runs that have no request count."""
    missing = [r.name for r in runs if r.requests is None]
    if missing:
        raise SyslrnError(
            f"runs without a request count: {_few(missing)}; record them with a "
            "request trigger or give a requests label"
        )


def load_graph(run: Run) -> SystemGraph:
    """Read a run's trace once and build its system graph (cached on the run).

    Also sets the run's request count from the trace (the count measured
    at the trigger socket wins over a campaign index), its duration and
    its longest gap between requests.
    """
    if run.graph is not None:
        return run.graph
    if run.path is None:
        raise SyslrnError(f"{run.name}: run has no trace")
    trace = read_trace(run.path)
    run.meta = trace.meta
    labels = dict(run.labels)
    labels.update(trace.labels)
    run.labels = labels
    counted = trace.requests
    if counted is not None:
        if run.requests is not None and counted != run.requests:
            log.debug(
                "%s: using the trace's count of %s over the campaign index's %d",
                run.name,
                format_count(counted, "request"),
                run.requests,
            )
        run.requests = counted
    lost = lost_events(trace.meta)
    if lost:
        log.warning(
            "%s: the recording lost %s; its features may be too low",
            run.name,
            format_count(lost, "event"),
        )
    if trace.meta.get("complete") is False:
        log.warning(
            "%s: the recording was interrupted; the trace is incomplete", run.name
        )

    run.duration_s = run_duration_s(trace)
    run.max_request_gap_s = max_request_gap_s(trace)
    run.graph = build_graph(trace, name=run.name)
    run.graph.requests = run.requests
    return run.graph


def lost_events(meta: dict[str, Any]) -> int:
    """Return the number of events the recorder reports as lost."""
    lost = meta.get("lost_events", meta.get("lost"))
    if isinstance(lost, dict):
        return sum(int(v) for v in lost.values() if isinstance(v, int | float))
    if isinstance(lost, int | float):
        return int(lost)
    return 0


def _host_times(trace: Trace, kind: str | None = None) -> dict[int, np.ndarray]:
    """Return the sorted event times of each host, optionally of one kind."""
    table = trace.table
    if kind is not None:
        table = table.filter(pc.equal(table.column("kind").cast(pa.string()), kind))
    if table.num_rows == 0:
        return {}
    hosts = pc.dictionary_encode(
        table.column("host").cast(pa.string())
    ).combine_chunks()
    codes = hosts.indices.to_numpy()
    ts = table.column("ts_ns").to_numpy().astype(np.int64)
    return {int(h): np.sort(ts[codes == h]) for h in np.unique(codes)}


def run_duration_s(trace: Trace) -> float | None:
    """Return how long the recording ran, in seconds.

    Taken from the metadata (``duration_s``, or ``stopped_ns - started_ns``
    as the recorder writes them); without them, the longest span between a
    host's first and last event.
    """
    meta = trace.meta
    if isinstance(meta.get("duration_s"), int | float):
        return float(meta["duration_s"])
    start, stop = meta.get("started_ns"), meta.get("stopped_ns")
    if isinstance(start, int) and isinstance(stop, int) and stop >= start:
        return (stop - start) / 1e9
    spans = [t[-1] - t[0] for t in _host_times(trace).values()]
    return max(spans) / 1e9 if spans else None


def max_request_gap_s(trace: Trace) -> float | None:
    """Return the longest time between two consecutive requests of a host, in
    seconds, or None with fewer than two request rows."""
    gaps = [
        np.diff(t).max() for t in _host_times(trace, REQUEST).values() if len(t) > 1
    ]
    return float(max(gaps)) / 1e9 if gaps else None
