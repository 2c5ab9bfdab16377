"""Decode batches of kernel event records into trace tables.

The layout mirrors ``struct event`` in bpf/events.h. Decoding works on
whole batches with numpy; strings and addresses, which repeat a lot, are
converted once per distinct value.
"""

from __future__ import annotations

import ipaddress

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from syslrn.trace import schema

EVENT_STR_LEN = 256

EVENT_DTYPE = np.dtype(
    [
        ("ts_ns", "<u8"),
        ("start_ns", "<u8"),
        ("parent_start_ns", "<u8"),
        ("sock_id", "<u8"),
        ("peer_id", "<u8"),
        ("pid", "<u4"),
        ("tid", "<u4"),
        ("ppid", "<u4"),
        ("exit_code", "<i4"),
        ("netns", "<u4"),
        ("peer_pid", "<u4"),
        ("kind", "u1"),
        ("family", "u1"),
        ("flags", "u1"),
        ("pad0", "u1"),
        ("lport", "<u2"),
        ("rport", "<u2"),
        ("str_len", "<u2"),
        ("pad1", "<u2"),
        ("pad2", "<u4"),
        ("laddr", "V16"),
        ("raddr", "V16"),
        ("comm", "S16"),
        ("str", f"V{EVENT_STR_LEN}"),
    ]
)
assert EVENT_DTYPE.itemsize == 384, EVENT_DTYPE.itemsize

# Codes of bpf/events.h, indexed by value.
KIND_NAMES = np.array(
    [
        None,
        schema.SNAPSHOT,
        schema.FORK,
        schema.EXEC,
        schema.EXIT,
        schema.CONNECT,
        schema.ACCEPT,
        schema.REQUEST,
    ],
    dtype=object,
)
KIND_CODES = {name: code for code, name in enumerate(KIND_NAMES) if name}
FAMILY_NONE, FAMILY_INET, FAMILY_INET6, FAMILY_UNIX = 0, 1, 2, 3
FAMILY_NAMES = [None, schema.INET, schema.INET6, schema.UNIX]

# Dictionary-encoded columns use one fixed dictionary, so batches concatenate.
_KIND_DICTIONARY = pa.array(list(schema.KINDS), type=pa.string())
_FAMILY_DICTIONARY = pa.array(list(schema.FAMILIES), type=pa.string())
_KIND_INDEX = np.array(
    [-1] + [schema.KINDS.index(name) for name in KIND_NAMES[1:]], dtype=np.int32
)
_FAMILY_INDEX = np.array([-1, 0, 1, 2], dtype=np.int32)


def _decode_unique(values: np.ndarray, convert) -> pa.Array:
    """Convert each distinct value once, then expand to the whole column.

    Values are fixed-width bytes; Arrow's hash-based dictionary encoding
    finds the distinct ones, which sorting (np.unique) does far slower.
    """
    if len(values) == 0:
        return pa.array([], type=pa.string())
    raw = np.ascontiguousarray(values)
    width = raw.dtype.itemsize
    binary = pa.Array.from_buffers(
        pa.binary(width), len(raw), [None, pa.py_buffer(raw.view(np.uint8).reshape(-1))]
    )
    encoded = pc.dictionary_encode(binary)
    converted = pa.array(
        [convert(value) for value in encoded.dictionary.to_pylist()], type=pa.string()
    )
    return converted.take(encoded.indices)


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


def _strings(records: np.ndarray) -> pa.Array:
    """Return the str field as text, cut at str_len; null where it is empty."""
    n = len(records)
    rows = np.flatnonzero(records["str_len"] > 0)
    data = (
        np.ascontiguousarray(records["str"][rows])
        .view(np.uint8)
        .reshape(len(rows), EVENT_STR_LEN)
    )
    lengths = records["str_len"][rows].astype(np.int64)
    data[np.arange(EVENT_STR_LEN)[None, :] >= lengths[:, None]] = 0
    abstract = (records["flags"][rows] & schema.FLAG_ABSTRACT) != 0
    data[abstract, 0] = ord("@")
    values = _decode_unique(
        data.view(f"V{EVENT_STR_LEN}").reshape(-1),
        lambda raw: _text(raw.rstrip(b"\0")),
    )
    positions = np.full(n, -1, dtype=np.int32)
    positions[rows] = np.arange(len(rows), dtype=np.int32)
    return values.take(pa.array(positions, mask=positions < 0))


def _address_text(raw: bytes, family: int) -> str | None:
    if family == FAMILY_INET:
        return str(ipaddress.IPv4Address(raw[:4]))
    if family == FAMILY_INET6:
        address = ipaddress.IPv6Address(raw)
        mapped = address.ipv4_mapped
        return str(mapped) if mapped is not None else str(address)
    return None


def _addresses(records: np.ndarray, field: str) -> pa.Array:
    # 16 address bytes and the family, as one 17-byte value per row.
    keyed = np.empty(len(records), dtype=[("family", "u1"), ("addr", "V16")])
    keyed["family"] = records["family"]
    keyed["addr"] = records[field]
    return _decode_unique(
        keyed.view("V17"), lambda item: _address_text(item[1:], item[0])
    )


def _dictionary(index: np.ndarray, dictionary: pa.Array) -> pa.Array:
    mask = index < 0
    indices = pa.array(np.where(mask, 0, index).astype(np.int32), mask=mask)
    return pa.DictionaryArray.from_arrays(indices, dictionary)


def _null_unless(values: np.ndarray, keep: np.ndarray, arrow_type) -> pa.Array:
    return pa.array(values, type=arrow_type, mask=~keep)


def decode(raw: np.ndarray, host: str) -> pa.Table:
    """Decode raw records (``V384``) into a table of the trace schema.

    Accepts on the trigger socket also yield a ``request`` row each.
    """
    records = (
        np.frombuffer(raw.tobytes(), dtype=EVENT_DTYPE)
        if len(raw)
        else (np.empty(0, dtype=EVENT_DTYPE))
    )
    requested = records[(records["flags"] & schema.FLAG_REQUEST) != 0].copy()
    requested["kind"] = KIND_CODES[schema.REQUEST]
    records = np.concatenate([records, requested])
    return table_from_records(records, host)


def table_from_records(records: np.ndarray, host: str) -> pa.Table:
    """Build a trace table from a structured array of ``EVENT_DTYPE``."""
    n = len(records)
    kind = records["kind"]
    family = records["family"]
    is_fork = (kind == KIND_CODES[schema.FORK]) | (kind == KIND_CODES[schema.SNAPSHOT])
    is_exec = kind == KIND_CODES[schema.EXEC]
    is_exit = kind == KIND_CODES[schema.EXIT]
    is_socket = family != FAMILY_NONE
    is_inet = (family == FAMILY_INET) | (family == FAMILY_INET6)
    is_unix = family == FAMILY_UNIX

    # An IPv4 peer of a dual-stack socket shows as ::ffff:a.b.c.d; it is an
    # IPv4 connection, and its other end shows plain IPv4.
    laddr = _addresses(records, "laddr")
    raddr = _addresses(records, "raddr")
    family_index = _FAMILY_INDEX[family].copy()
    local = np.ascontiguousarray(records["laddr"]).view(np.uint8).reshape(n, 16)
    mapped = (
        (family == FAMILY_INET6)
        & np.all(local[:, :10] == 0, axis=1)
        & (local[:, 10] == 0xFF)
        & (local[:, 11] == 0xFF)
    )
    family_index[mapped] = _FAMILY_INDEX[FAMILY_INET]

    text = _strings(records)
    comm = _decode_unique(records["comm"], lambda raw: _text(raw.rstrip(b"\0")))
    null_text = pa.nulls(n, type=pa.string())

    columns = {
        "ts_ns": pa.array(records["ts_ns"], type=pa.uint64()),
        "host": pa.DictionaryArray.from_arrays(
            pa.array(np.zeros(n, dtype=np.int32)), pa.array([host])
        ),
        "kind": _dictionary(_KIND_INDEX[kind], _KIND_DICTIONARY),
        "pid": pa.array(records["pid"].astype(np.int32)),
        "start_ns": pa.array(records["start_ns"], type=pa.uint64()),
        "ppid": _null_unless(records["ppid"].astype(np.int32), is_fork, pa.int32()),
        "parent_start_ns": _null_unless(
            records["parent_start_ns"], is_fork, pa.uint64()
        ),
        "tid": pa.array(records["tid"].astype(np.int32)),
        "comm": comm,
        "flags": pa.array(records["flags"], type=pa.uint8()),
        "filename": pa.array(
            np.where(is_exec, np.asarray(text, dtype=object), None), type=pa.string()
        )
        if n
        else null_text,
        "exit_code": _null_unless(records["exit_code"], is_exit, pa.int32()),
        "family": _dictionary(family_index, _FAMILY_DICTIONARY),
        "laddr": laddr,
        "lport": _null_unless(records["lport"], is_inet, pa.uint16()),
        "raddr": raddr,
        "rport": _null_unless(records["rport"], is_inet, pa.uint16()),
        "netns": _null_unless(records["netns"], is_socket, pa.uint32()),
        "path": pa.array(
            np.where(is_unix, np.asarray(text, dtype=object), None), type=pa.string()
        )
        if n
        else null_text,
        "sock_id": _null_unless(records["sock_id"], is_socket, pa.uint64()),
        "peer_id": _null_unless(
            records["peer_id"], is_unix & (records["peer_id"] != 0), pa.uint64()
        ),
        "peer_pid": _null_unless(
            records["peer_pid"].astype(np.int32),
            is_unix & (records["peer_pid"] != 0),
            pa.int32(),
        ),
    }
    return pa.table(columns).cast(schema.EVENT_SCHEMA)
