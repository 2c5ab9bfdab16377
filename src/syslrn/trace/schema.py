"""Event schema of a syslrn trace: one row per kernel event, typed columns.

A trace is one table. Every row carries the time, the host and the process
instance it concerns; the other columns are filled for the kinds that have
them and are null elsewhere. Run-level facts (labels, host, kernel, probes,
lost-event counts, request count) travel in the file's key-value metadata,
stored as one JSON document under the key ``syslrn``.
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = 1

#: Metadata key under which the run's JSON document is stored.
METADATA_KEY = b"syslrn"

# Event kinds. ``snapshot`` rows describe processes already alive when the
# recording started; the kernel emits the others as they happen.
SNAPSHOT = "snapshot"
FORK = "fork"
EXEC = "exec"
EXIT = "exit"
CONNECT = "connect"
ACCEPT = "accept"
REQUEST = "request"

KINDS = (SNAPSHOT, FORK, EXEC, EXIT, CONNECT, ACCEPT, REQUEST)

# Socket families of connection ends.
INET = "inet"
INET6 = "inet6"
UNIX = "unix"

FAMILIES = (INET, INET6, UNIX)

# Bits of the ``flags`` column.
#: The process belongs to the tree of the command given to ``syslrn record``.
FLAG_DRIVER = 1 << 0
#: The string column (``filename`` or ``path``) lost its head to the record
#: size; the tail, and so the basename, is kept.
FLAG_TRUNCATED = 1 << 1
#: A connect that returned EINPROGRESS: the 4-tuple is known, the handshake
#: had not finished.
FLAG_INPROGRESS = 1 << 2
#: A kernel thread (PF_KTHREAD).
FLAG_KTHREAD = 1 << 3
#: ``path`` is an abstract unix name, written with a leading ``@``.
FLAG_ABSTRACT = 1 << 4
#: The accept was on the trigger socket; a ``request`` row repeats it.
FLAG_REQUEST = 1 << 5
#: A snapshot row read from procfs, whose start_ns has clock-tick
#: resolution: the same process's events carry a start_ns within one tick.
FLAG_APPROX_START = 1 << 6

_dict_str = pa.dictionary(pa.int32(), pa.string())

EVENT_SCHEMA = pa.schema(
    [
        # CLOCK_BOOTTIME of the recording host, in nanoseconds.
        pa.field("ts_ns", pa.uint64(), nullable=False),
        pa.field("host", _dict_str, nullable=False),
        pa.field("kind", _dict_str, nullable=False),
        # The process instance is (host, pid, start_ns): pid is the
        # thread-group id, start_ns the group leader's boot-time start.
        # For fork rows it is the new child.
        pa.field("pid", pa.int32(), nullable=False),
        pa.field("start_ns", pa.uint64(), nullable=False),
        # Parent instance: fork and snapshot rows.
        pa.field("ppid", pa.int32()),
        pa.field("parent_start_ns", pa.uint64()),
        pa.field("tid", pa.int32()),
        pa.field("comm", pa.string()),
        pa.field("flags", pa.uint8(), nullable=False),
        # exec: the full filename passed to execve.
        pa.field("filename", pa.string()),
        # exit: the exit status as wait(2) encodes it.
        pa.field("exit_code", pa.int32()),
        # Connection ends: connect, accept and request rows.
        pa.field("family", _dict_str),
        pa.field("laddr", pa.string()),
        pa.field("lport", pa.uint16()),
        pa.field("raddr", pa.string()),
        pa.field("rport", pa.uint16()),
        pa.field("netns", pa.uint32()),
        # unix: the socket path (the listener's, on both ends).
        pa.field("path", pa.string()),
        # Kernel identity of this end's socket and of its peer's socket,
        # masked by a key drawn per recording. A unix connect pairs with the
        # accept whose peer_id is the connect's sock_id.
        pa.field("sock_id", pa.uint64()),
        pa.field("peer_id", pa.uint64()),
        # unix: the other end's process, as the kernel's sk_peer_pid records it.
        pa.field("peer_pid", pa.int32()),
    ]
)

COLUMNS = tuple(EVENT_SCHEMA.names)


def empty_table() -> pa.Table:
    """Return a trace table with no rows."""
    return EVENT_SCHEMA.empty_table()


def table_from_rows(rows: list[dict]) -> pa.Table:
    """Build a trace table from dicts of column values; absent columns are null.

    ``flags`` defaults to 0. Meant for hand-built traces in tests and tools,
    not for the recorder's hot path.
    """
    columns = {}
    for name in EVENT_SCHEMA.names:
        default = 0 if name == "flags" else None
        columns[name] = [row.get(name, default) for row in rows]
    unknown = {key for row in rows for key in row} - set(EVENT_SCHEMA.names)
    if unknown:
        raise ValueError(f"unknown trace columns {sorted(unknown)}")
    return pa.table(
        {
            name: pa.array(columns[name], type=EVENT_SCHEMA.field(name).type)
            for name in EVENT_SCHEMA.names
        },
        schema=EVENT_SCHEMA,
    )
