"""Build the system graph of a run from its trace.

Every step groups whole columns with numpy (sorting, ranking, searching).
No step runs Python code per event, so a trace of a million events builds
in seconds.

Semantics, per process instance ``(host, pid, start_ns)``:

- Every row except ``request`` rows makes its process a node. A parent named
  only by ``ppid`` in a child's row is not a node.
- Node type: basename of the last executable the process ran (``exec``
  rows, and the ``filename`` of a ``snapshot`` row when the recorder gives
  one). An exec of an open file (``fexecve``, ``execveat`` with
  ``AT_EMPTY_PATH``) has the filename ``/dev/fd/N``, so its row's ``comm``
  names it instead, which the kernel sets to the file's name (Linux 6.14
  and later), as the online monitor reads it. A process with no exec has
  the type its parent had when it forked it, which follows the kernel: a
  forked child runs its parent's image until it calls execve. Processes
  with neither are typed by their ``comm``.
- Spawn edges: parent -> child, from the child's ``fork`` row. One per
  child. A ``snapshot`` row makes no edge: the process was created before
  the run, and the online monitor, whose windows open in the middle of the
  host's life, could not count that edge either.
- IPC edges: unix ``connect`` -> ``accept``, paired when the connect's
  ``sock_id`` is the accept's ``peer_id`` on the same host.
- Net edges: TCP ``connect`` -> ``accept``, paired by mirrored 4-tuples
  within a host and network namespace first, then, for addresses other
  than loopback, across hosts and namespaces (traces merged from several
  hosts). A 4-tuple that recurs pairs in time order, each end used once.
- An end without a peer gets an edge to an external node, one per remote
  address (per host for loopback and unix endpoints).

So the degree of a process, counted over all its edges, is the number of
children it forked in the run, plus one if it was forked in the run by a
process that is a node, plus the number of its connect and accept rows: a
quantity a probe can count from the process's own events.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from syslrn.graph.system import EXTERNAL, IPC, NET, SPAWN, SystemGraph
from syslrn.trace.io import Trace
from syslrn.trace.schema import (
    ACCEPT,
    CONNECT,
    EXEC,
    FLAG_DRIVER,
    FORK,
    INET,
    INET6,
    KINDS,
    REQUEST,
    SNAPSHOT,
    UNIX,
)

log = logging.getLogger(__name__)

#: Node type of a process whose rows carry neither a filename nor a comm.
UNKNOWN_TYPE = "(unknown)"

_KIND_CODE = {kind: code for code, kind in enumerate(KINDS)}
_UNKNOWN_KIND = len(KINDS)
_SNAPSHOT, _FORK, _EXEC = _KIND_CODE[SNAPSHOT], _KIND_CODE[FORK], _KIND_CODE[EXEC]
_CONNECT, _ACCEPT = _KIND_CODE[CONNECT], _KIND_CODE[ACCEPT]

_COLUMNS = (
    "ts_ns",
    "host",
    "kind",
    "pid",
    "start_ns",
    "ppid",
    "parent_start_ns",
    "comm",
    "flags",
    "filename",
    "family",
    "laddr",
    "lport",
    "raddr",
    "rport",
    "netns",
    "path",
    "sock_id",
    "peer_id",
)


def is_driven(labels: dict[str, str]) -> bool:
    """Return whether run labels mark the run as driven (``driven=true``)."""
    return str(labels.get("driven", "")).strip().lower() in ("true", "1", "yes")


def build_graph(
    trace: Trace | pa.Table,
    *,
    name: str | None = None,
    driven: bool | None = None,
) -> SystemGraph:
    """Build the system graph of one run.

    Parameters
    ----------
    trace : Trace or pyarrow.Table
        The run's events, with the columns of the trace schema.
    name : str, optional
        Name of the run; defaults to the trace file's name.
    driven : bool, optional
        Whether the driver's processes are outside the system under test;
        defaults to the run's ``driven`` label.

    Returns
    -------
    SystemGraph
    """
    labels: dict[str, str] = {}
    requests = None
    if isinstance(trace, Trace):
        labels = trace.labels
        requests = trace.requests
        name = name if name is not None else trace.name
        table = trace.table
    else:
        table = trace
    if driven is None:
        driven = is_driven(labels)

    events = _Events.from_table(table)
    procs = _process_nodes(events)
    label_code, vocabulary = _node_labels(events, procs)
    spawn_src, spawn_dst = _spawn_edges(events, procs)
    links = _connection_edges(events, procs)

    n_proc = procs.n
    n_ext = len(links.ext_address)
    external_code = len(vocabulary)
    codes = np.concatenate([label_code, np.full(n_ext, external_code)])
    names = vocabulary + ([EXTERNAL] if n_ext else [])
    type_names, type_index = _sorted_types(names, codes)

    return SystemGraph(
        type_names=type_names,
        type_index=type_index,
        hosts=events.hosts,
        host_index=np.concatenate([procs.host, links.ext_host]).astype(np.int32),
        pid=np.concatenate([procs.pid, np.full(n_ext, -1)]).astype(np.int32),
        start_ns=np.concatenate([procs.start, np.zeros(n_ext, dtype=np.uint64)]).astype(
            np.uint64
        ),
        external=np.concatenate(
            [np.zeros(n_proc, dtype=bool), np.ones(n_ext, dtype=bool)]
        ),
        driver=np.concatenate([procs.driver, np.zeros(n_ext, dtype=bool)]),
        created=np.concatenate([procs.created, np.zeros(n_ext, dtype=bool)]),
        address={n_proc + i: a for i, a in enumerate(links.ext_address)},
        src=np.concatenate([spawn_src, links.src]).astype(np.int64),
        dst=np.concatenate([spawn_dst, links.dst]).astype(np.int64),
        edge_kind=np.concatenate([np.full(len(spawn_src), SPAWN), links.kind]).astype(
            np.uint8
        ),
        driven=bool(driven),
        name=name or "",
        requests=requests,
        labels=labels,
    )


# -- columns ---------------------------------------------------------------


def _dictionary_codes(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, list]:
    """Return per-row codes into a list of distinct values, with -1 for nulls."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if not pa.types.is_dictionary(column.type):
        column = pc.dictionary_encode(column)
    indices = _filled(column.indices, -1, np.int64)
    return indices, column.dictionary.to_pylist()


def _filled(column: pa.ChunkedArray | pa.Array, value, dtype) -> np.ndarray:
    # Skipping fill_null on columns without nulls saves a compute call, which
    # matters for the many small traces of a training set.
    if column.null_count:
        column = pc.fill_null(column, value)
    return column.to_numpy().astype(dtype, copy=False)


@dataclass
class _Events:
    """The columns of a trace's non-request rows, as numpy arrays.

    String columns are dictionary-encoded once, so that later steps work on
    integer codes and handle each distinct string only once.
    """

    table: pa.Table
    hosts: list[str]
    kind: np.ndarray
    ts: np.ndarray
    host: np.ndarray
    pid: np.ndarray
    start: np.ndarray
    ppid: np.ndarray
    pstart: np.ndarray
    flags: np.ndarray
    _strings: dict = field(default_factory=dict)
    _numbers: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.kind.shape[0])

    def strings(self, name: str, rows: np.ndarray) -> tuple[np.ndarray, list]:
        """Return the codes of string column ``name`` at ``rows`` (-1 for null)
        and the column's distinct values."""
        if name not in self._strings:
            self._strings[name] = _dictionary_codes(self.table.column(name))
        codes, values = self._strings[name]
        return codes[rows], values

    def numbers(self, name: str, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return integer column ``name`` at ``rows`` as int64 and its validity.

        Unsigned 64-bit values (socket ids) keep their bit pattern.
        """
        if name not in self._numbers:
            column = self.table.column(name)
            if column.null_count:
                valid = pc.is_valid(column).to_numpy(zero_copy_only=False)
                column = pc.fill_null(column, 0)
            else:
                valid = np.ones(len(column), dtype=bool)
            values = column.to_numpy()
            values = (
                values.view(np.int64)
                if values.dtype == np.uint64
                else values.astype(np.int64)
            )
            self._numbers[name] = (values, valid)
        values, valid = self._numbers[name]
        return values[rows], valid[rows]

    @classmethod
    def from_table(cls, table: pa.Table) -> _Events:
        table = table.select(list(_COLUMNS)).unify_dictionaries().combine_chunks()

        kind_index, kind_values = _dictionary_codes(table.column("kind"))
        mapping = np.array(
            [_KIND_CODE.get(v, _UNKNOWN_KIND) for v in kind_values] + [_UNKNOWN_KIND],
            dtype=np.int64,
        )
        kind = mapping[kind_index]
        unknown = [v for v in kind_values if v not in _KIND_CODE]
        if unknown:
            log.warning("ignoring rows of unknown event kinds %s", unknown)

        # Request rows only count requests, so they are no part of the graph.
        keep = (kind != _KIND_CODE[REQUEST]) & (kind != _UNKNOWN_KIND)
        if not keep.all():
            table = table.filter(pa.array(keep))
            kind = kind[keep]

        host, hosts = _dictionary_codes(table.column("host"))
        return cls(
            table=table,
            hosts=[str(h) for h in hosts],
            kind=kind,
            ts=_filled(table.column("ts_ns"), 0, np.uint64),
            host=host,
            pid=_filled(table.column("pid"), -1, np.int64),
            start=_filled(table.column("start_ns"), 0, np.uint64),
            ppid=_filled(table.column("ppid"), -1, np.int64),
            pstart=_filled(table.column("parent_start_ns"), 0, np.uint64),
            flags=_filled(table.column("flags"), 0, np.uint8),
        )


# -- grouping primitives ---------------------------------------------------


def _group_codes(*keys: np.ndarray) -> tuple[np.ndarray, int]:
    """Number the distinct key tuples 0..n-1 in sorted order.

    Returns the code of each row and the number of distinct tuples.
    """
    n = len(keys[0])
    if n == 0:
        return np.zeros(0, dtype=np.int64), 0
    order = np.lexsort(keys[::-1])
    changed = np.zeros(n, dtype=bool)
    changed[0] = True
    for key in keys:
        sorted_key = key[order]
        changed[1:] |= sorted_key[1:] != sorted_key[:-1]
    ranks = np.cumsum(changed) - 1
    codes = np.empty(n, dtype=np.int64)
    codes[order] = ranks
    return codes, int(ranks[-1]) + 1


def _group_bounds(
    group: np.ndarray, *order_keys: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Sort rows by group, then by ``order_keys``.

    Returns the order and a mask of the first row of each group in it.
    """
    order = np.lexsort((*order_keys[::-1], group))
    sorted_group = group[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = sorted_group[1:] != sorted_group[:-1]
    return order, first


def _first_per_group(group: np.ndarray, *order_keys: np.ndarray) -> np.ndarray:
    """Return the row index of the first row of each group, by ``order_keys``."""
    if len(group) == 0:
        return np.zeros(0, dtype=np.int64)
    order, first = _group_bounds(group, *order_keys)
    return order[first]


def _last_per_group(group: np.ndarray, *order_keys: np.ndarray) -> np.ndarray:
    """Return the row index of the last row of each group, by ``order_keys``."""
    if len(group) == 0:
        return np.zeros(0, dtype=np.int64)
    order, first = _group_bounds(group, *order_keys)
    last = np.empty_like(first)
    last[:-1] = first[1:]
    last[-1] = True
    return order[last]


def _rank_within_groups(group: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """Return each row's position, in time order, among the rows of its group."""
    n = len(group)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    order, first = _group_bounds(group, ts)
    positions = np.arange(n)
    group_start = np.maximum.accumulate(np.where(first, positions, 0))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = positions - group_start
    return rank


def _pair_in_order(
    connect_group: np.ndarray,
    connect_ts: np.ndarray,
    accept_group: np.ndarray,
    accept_ts: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Pair the i-th connect of a group with the i-th accept of that group.

    Groups are codes in one space for both sides. Returns the paired
    positions into the connect arrays and into the accept arrays.
    """
    if len(connect_group) == 0 or len(accept_group) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    connect_rank = _rank_within_groups(connect_group, connect_ts)
    accept_rank = _rank_within_groups(accept_group, accept_ts)
    width = int(max(connect_rank.max(), accept_rank.max())) + 1
    _, ci, ai = np.intersect1d(
        connect_group * width + connect_rank,
        accept_group * width + accept_rank,
        assume_unique=True,
        return_indices=True,
    )
    return ci.astype(np.int64), ai.astype(np.int64)


# -- processes -------------------------------------------------------------


@dataclass
class _Processes:
    n: int
    #: Node of each row.
    node: np.ndarray
    #: Parent node named by each row (fork and snapshot rows), else -1.
    parent: np.ndarray
    host: np.ndarray
    pid: np.ndarray
    start: np.ndarray
    driver: np.ndarray
    created: np.ndarray


def _process_nodes(events: _Events) -> _Processes:
    """Number the process instances and resolve the parents that are nodes."""
    n = events.n
    names_parent = ((events.kind == _FORK) | (events.kind == _SNAPSHOT)) & (
        events.ppid >= 0
    )
    parent_rows = np.flatnonzero(names_parent)

    # Code the rows' own instances and the parents they name together, so a
    # parent gets the code of its own rows when it has any.
    codes, n_codes = _group_codes(
        np.concatenate([events.host, events.host[parent_rows]]),
        np.concatenate([events.pid, events.ppid[parent_rows]]),
        np.concatenate([events.start, events.pstart[parent_rows]]),
    )
    is_node = np.zeros(n_codes, dtype=bool)
    is_node[codes[:n]] = True
    node_of_code = np.cumsum(is_node) - 1
    node = node_of_code[codes[:n]]
    parent = np.full(n, -1, dtype=np.int64)
    parent_codes = codes[n:]
    parent[parent_rows] = np.where(
        is_node[parent_codes], node_of_code[parent_codes], -1
    )

    n_nodes = int(is_node.sum())
    host = np.zeros(n_nodes, dtype=np.int64)
    pid = np.zeros(n_nodes, dtype=np.int64)
    start = np.zeros(n_nodes, dtype=np.uint64)
    host[node], pid[node], start[node] = events.host, events.pid, events.start
    driver = np.zeros(n_nodes, dtype=bool)
    driver[node[(events.flags & FLAG_DRIVER) != 0]] = True
    created = np.zeros(n_nodes, dtype=bool)
    created[node[events.kind == _FORK]] = True
    return _Processes(n_nodes, node, parent, host, pid, start, driver, created)


def _node_labels(events: _Events, procs: _Processes) -> tuple[np.ndarray, list[str]]:
    """Return each process node's label code and the label vocabulary."""
    all_rows = np.arange(events.n)
    comm_code, comm_values = events.strings("comm", all_rows)
    comm_rows = np.flatnonzero(comm_code >= 0)
    comm_code = comm_code[comm_rows]

    filename_code, filenames = events.strings("filename", all_rows)
    exec_rows = np.flatnonzero(
        (filename_code >= 0) & ((events.kind == _EXEC) | (events.kind == _SNAPSHOT))
    )
    # A filename ending in "/" has no basename, so such an exec gives no label.
    base_values = [str(f).rpartition("/")[2] for f in filenames]
    base_code = filename_code[exec_rows]
    usable = np.array([bool(v) for v in base_values] + [False])[base_code]
    exec_rows, base_code = exec_rows[usable], base_code[usable]
    by_fd = np.array([_is_fd_path(str(f)) for f in filenames] + [False])[base_code]

    vocabulary = sorted(
        set(comm_values) | {v for v in base_values if v} | {UNKNOWN_TYPE}
    )
    position = {v: i for i, v in enumerate(vocabulary)}
    comm_label = np.array([position[v] for v in comm_values] + [0], dtype=np.int64)[
        comm_code
    ]
    base_label = np.array(
        [position[v] if v else 0 for v in base_values] + [0], dtype=np.int64
    )[base_code]
    row_comm = np.full(events.n, -1, dtype=np.int64)
    row_comm[comm_rows] = comm_label
    by_fd &= row_comm[exec_rows] >= 0
    base_label[by_fd] = row_comm[exec_rows[by_fd]]

    label = _comm_labels(events, procs, comm_rows, comm_label, position[UNKNOWN_TYPE])
    label = _inherit_labels(events, procs, label, exec_rows, base_label)

    # The last executable a process ran names it.
    if len(exec_rows):
        last = _last_per_group(procs.node[exec_rows], events.ts[exec_rows])
        label[procs.node[exec_rows[last]]] = base_label[last]
    return label, vocabulary


def _is_fd_path(filename: str) -> bool:
    """Return whether ``filename`` is the kernel's name for an exec of an
    open file, ``/dev/fd/N``."""
    head, _, tail = filename.rpartition("/")
    return head == "/dev/fd" and tail.isascii() and tail.isdigit()


def _comm_labels(
    events: _Events,
    procs: _Processes,
    comm_rows: np.ndarray,
    comm_label: np.ndarray,
    unknown: int,
) -> np.ndarray:
    """Label each node by one comm: its snapshot's, else its fork row's, else
    its earliest row's."""
    label = np.full(procs.n, unknown, dtype=np.int64)
    if len(comm_rows) == 0:
        return label
    kind = events.kind[comm_rows]
    priority = np.where(kind == _SNAPSHOT, 0, np.where(kind == _FORK, 1, 2))
    nodes = procs.node[comm_rows]
    first = _first_per_group(nodes, priority, events.ts[comm_rows])
    label[nodes[first]] = comm_label[first]
    return label


def _inherit_labels(
    events: _Events,
    procs: _Processes,
    label: np.ndarray,
    exec_rows: np.ndarray,
    base_label: np.ndarray,
) -> np.ndarray:
    """Give each forked child the label its parent had when it forked it."""
    fork_rows = np.flatnonzero(
        (events.kind == _FORK) & (procs.parent >= 0) & (procs.parent != procs.node)
    )
    if len(fork_rows) == 0:
        return label
    fork_rows = fork_rows[_first_per_group(procs.node[fork_rows], events.ts[fork_rows])]
    child = procs.node[fork_rows]
    parent = procs.parent[fork_rows]
    fork_ts = events.ts[fork_rows]

    # The parent's last exec at or before the fork, found by a binary search
    # over exec events sorted by (node, time rank).
    exec_node = procs.node[exec_rows]
    exec_ts = events.ts[exec_rows]
    all_ts = np.unique(np.concatenate([exec_ts, fork_ts]))
    width = len(all_ts) + 1
    exec_key = exec_node * width + np.searchsorted(all_ts, exec_ts)
    order = np.argsort(exec_key, kind="stable")
    exec_key, exec_node, exec_label = (
        exec_key[order],
        exec_node[order],
        base_label[order],
    )
    query = parent * width + np.searchsorted(all_ts, fork_ts)
    hit = np.searchsorted(exec_key, query, side="right") - 1
    found = hit >= 0
    found[found] = exec_node[hit[found]] == parent[found]

    label = label.copy()
    label[child[found]] = exec_label[hit[found]]

    # Children whose parent had not exec'd take the parent's own inherited
    # label. Chains of such forks resolve by pointer jumping.
    source = np.full(procs.n, -1, dtype=np.int64)
    source[child[~found]] = parent[~found]
    for _ in range(64):
        pending = np.flatnonzero(source >= 0)
        if len(pending) == 0:
            break
        via = source[pending]
        via_source = source[via]
        done = via_source < 0
        label[pending[done]] = label[via[done]]
        source[pending] = np.where(done, -1, via_source)
    else:
        log.warning("fork chains did not resolve; the trace names a cycle of parents")
    return label


def _spawn_edges(events: _Events, procs: _Processes) -> tuple[np.ndarray, np.ndarray]:
    rows = np.flatnonzero(
        (procs.parent >= 0) & (procs.parent != procs.node) & (events.kind == _FORK)
    )
    rows = rows[_first_per_group(procs.node[rows], events.ts[rows])]
    return procs.parent[rows], procs.node[rows]


def _sorted_types(names: list[str], codes: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Keep only the used names, sorted, and renumber the codes."""
    used = np.unique(codes)
    type_names = sorted({names[c] for c in used})
    position = {name: i for i, name in enumerate(type_names)}
    remap = np.zeros(len(names), dtype=np.int32)
    for c in used:
        remap[c] = position[names[c]]
    return type_names, remap[codes] if len(codes) else np.zeros(0, dtype=np.int32)


# -- connections -----------------------------------------------------------


@dataclass
class _Links:
    src: np.ndarray
    dst: np.ndarray
    kind: np.ndarray
    ext_host: np.ndarray
    ext_address: list[str]


def _normalize_address(text: str) -> tuple[str, bool]:
    """Return an address in canonical form and whether it is loopback.

    IPv4-mapped IPv6 addresses become IPv4, because a dual-stack server
    reports an IPv4 client in that form.
    """
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return text, False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return str(address), address.is_loopback


def _connection_edges(events: _Events, procs: _Processes) -> _Links:
    """Pair connection ends into edges, and give unpaired ends external peers."""
    rows = np.flatnonzero((events.kind == _CONNECT) | (events.kind == _ACCEPT))
    family_code, family_values = events.strings("family", rows)
    family = np.array(
        [{INET: 1, INET6: 1, UNIX: 2}.get(v, 0) for v in family_values] + [0]
    )
    family = family[family_code]
    is_connect = events.kind[rows] == _CONNECT
    host = events.host[rows]
    ts = events.ts[rows]
    paired = np.zeros(len(rows), dtype=bool)
    src, dst, kinds = [], [], []

    def add_pairs(connects: np.ndarray, accepts: np.ndarray, kind: int) -> None:
        paired[connects] = True
        paired[accepts] = True
        src.append(procs.node[rows[connects]])
        dst.append(procs.node[rows[accepts]])
        kinds.append(np.full(len(connects), kind))

    # Unix stream: the accepted socket's peer is the connecting socket.
    sock_id, has_sock = events.numbers("sock_id", rows)
    peer_id, has_peer = events.numbers("peer_id", rows)
    uc = np.flatnonzero((family == 2) & is_connect & has_sock)
    ua = np.flatnonzero((family == 2) & ~is_connect & has_peer)
    codes, _ = _group_codes(
        np.concatenate([host[uc], host[ua]]),
        np.concatenate([sock_id[uc], peer_id[ua]]),
    )
    ci, ai = _pair_in_order(codes[: len(uc)], ts[uc], codes[len(uc) :], ts[ua])
    add_pairs(uc[ci], ua[ai], IPC)

    # TCP: the accept's (raddr, rport, laddr, lport) is the connect's
    # (laddr, lport, raddr, rport).
    inet = _InetColumns.read(events, rows, family == 1)
    tc = np.flatnonzero(inet.valid & is_connect)
    ta = np.flatnonzero(inet.valid & ~is_connect)
    netns, _ = events.numbers("netns", rows)
    for scoped in (True, False):
        tc, ta = tc[~paired[tc]], ta[~paired[ta]]
        if not scoped:
            # Loopback traffic never leaves its host and namespace.
            tc, ta = tc[~inet.loopback[tc]], ta[~inet.loopback[ta]]
        connect_key = [inet.laddr[tc], inet.lport[tc], inet.raddr[tc], inet.rport[tc]]
        accept_key = [inet.raddr[ta], inet.rport[ta], inet.laddr[ta], inet.lport[ta]]
        if scoped:
            connect_key = [host[tc], netns[tc], *connect_key]
            accept_key = [host[ta], netns[ta], *accept_key]
        codes, _ = _group_codes(
            *(
                np.concatenate([c, a])
                for c, a in zip(connect_key, accept_key, strict=True)
            )
        )
        ci, ai = _pair_in_order(codes[: len(tc)], ts[tc], codes[len(tc) :], ts[ta])
        add_pairs(tc[ci], ta[ai], NET)

    # NOTE: when one end of a recurring 4-tuple was not traced, pairing in
    # time order can join the wrong occurrences. Degrees stay right, because
    # each end still has exactly one edge.
    links = _external_edges(
        events, procs, rows, np.flatnonzero(~paired), family, is_connect, inet
    )
    links.src = np.concatenate(src + [links.src])
    links.dst = np.concatenate(dst + [links.dst])
    links.kind = np.concatenate(kinds + [links.kind])
    return links


@dataclass
class _InetColumns:
    """Address codes of TCP ends, in one code space for local and remote."""

    valid: np.ndarray
    laddr: np.ndarray
    raddr: np.ndarray
    lport: np.ndarray
    rport: np.ndarray
    loopback: np.ndarray
    addresses: list[str]

    @classmethod
    def read(
        cls, events: _Events, rows: np.ndarray, is_inet: np.ndarray
    ) -> _InetColumns:
        l_code, l_values = events.strings("laddr", rows)
        r_code, r_values = events.strings("raddr", rows)
        l_normal = [_normalize_address(v) for v in l_values]
        r_normal = [_normalize_address(v) for v in r_values]
        addresses = sorted({a for a, _ in l_normal} | {a for a, _ in r_normal})
        position = {a: i for i, a in enumerate(addresses)}
        loop_of = {a: b for a, b in l_normal + r_normal}
        loop = np.array([loop_of[a] for a in addresses] + [False])

        l_code = np.array([position[a] for a, _ in l_normal] + [-1], dtype=np.int64)[
            l_code
        ]
        r_code = np.array([position[a] for a, _ in r_normal] + [-1], dtype=np.int64)[
            r_code
        ]
        lport, has_lport = events.numbers("lport", rows)
        rport, has_rport = events.numbers("rport", rows)
        valid = is_inet & (l_code >= 0) & (r_code >= 0) & has_lport & has_rport
        loopback = loop[l_code] | loop[r_code]
        return cls(valid, l_code, r_code, lport, rport, loopback, addresses)


def _external_edges(
    events: _Events,
    procs: _Processes,
    rows: np.ndarray,
    unpaired: np.ndarray,
    family: np.ndarray,
    is_connect: np.ndarray,
    inet: _InetColumns,
) -> _Links:
    """Give every unpaired end an edge to an external node of its remote address."""
    n_addr = len(inet.addresses)
    path_code, path_values = events.strings("path", rows[unpaired])
    fam = family[unpaired]
    is_unix = fam == 2
    is_inet = (fam == 1) & (inet.raddr[unpaired] >= 0)
    # One address space: TCP remote addresses, then unix paths, then "unknown".
    unknown = n_addr + len(path_values) + 1
    address = np.where(is_inet, inet.raddr[unpaired], unknown)
    address = np.where(
        is_unix,
        np.where(path_code >= 0, n_addr + path_code, n_addr + len(path_values)),
        address,
    )
    local = is_unix | (is_inet & inet.loopback[unpaired]) | (address == unknown)
    scope = np.where(local, events.host[rows[unpaired]], -1)

    codes, n_ext = _group_codes(scope, address)
    first = _first_per_group(codes)
    names = [f"{'inet6' if ':' in a else 'inet'}:{a}" for a in inet.addresses]
    names += [f"unix:{p}" for p in path_values] + ["unix:?", "unknown"]
    ext_address = [""] * n_ext
    for row in first:
        text = names[address[row]]
        if scope[row] >= 0:
            text = f"{events.hosts[scope[row]]}/{text}"
        ext_address[codes[row]] = text

    n_proc = procs.n
    process = procs.node[rows[unpaired]]
    endpoint = n_proc + codes
    connect = is_connect[unpaired]
    return _Links(
        src=np.where(connect, process, endpoint),
        dst=np.where(connect, endpoint, process),
        kind=np.where(is_unix, IPC, NET),
        ext_host=scope[first] if n_ext else np.zeros(0, dtype=np.int64),
        ext_address=ext_address,
    )
