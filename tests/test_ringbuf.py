"""The ring buffer consumer on a memory image of the kernel's mapping.

A test cannot make a BPF producer stop half-way through a record. The
two areas the kernel maps, the consumer position and the producer
position with the data, are therefore bytearrays here, written the way
the kernel writes them.
"""

from __future__ import annotations

import mmap
import struct

import numpy as np

from syslrn.collect.ringbuf import _BUSY_BIT, _DISCARD_BIT, RingBuffer

RECORD = 16
DATA = 4096


def _ring() -> RingBuffer:
    ring = object.__new__(RingBuffer)
    ring.data_size = DATA
    ring.record_size = RECORD
    ring.stride = RECORD + 8
    ring._mask = DATA - 1
    ring._page = mmap.PAGESIZE
    ring._consumer = bytearray(mmap.PAGESIZE)
    ring._producer = bytearray(mmap.PAGESIZE + 2 * DATA)
    ring._dtype = np.dtype([("len", "<u4"), ("pg_off", "<u4"), ("data", f"V{RECORD}")])
    return ring


def _produce(ring: RingBuffer, index: int, payload: bytes, flags: int = 0) -> None:
    offset = ring._page + index * ring.stride
    struct.pack_into("<II", ring._producer, offset, RECORD | flags, 0)
    ring._producer[offset + 8 : offset + 8 + RECORD] = payload
    struct.pack_into("<Q", ring._producer, 0, (index + 1) * ring.stride)


def _consumer_position(ring: RingBuffer) -> int:
    return struct.unpack_from("<Q", ring._consumer, 0)[0]


def test_consume_waits_for_busy_head_record():
    ring = _ring()
    _produce(ring, 0, b"a" * RECORD, flags=int(_BUSY_BIT))

    records = ring.consume()

    assert len(records) == 0
    assert _consumer_position(ring) == 0


def test_consume_returns_record_once_committed():
    ring = _ring()
    _produce(ring, 0, b"a" * RECORD, flags=int(_BUSY_BIT))
    ring.consume()
    _produce(ring, 0, b"a" * RECORD)

    records = ring.consume()

    assert [r.tobytes() for r in records] == [b"a" * RECORD]
    assert _consumer_position(ring) == ring.stride


def test_consume_skips_discarded_records():
    ring = _ring()
    _produce(ring, 0, b"d" * RECORD, flags=int(_DISCARD_BIT))

    records = ring.consume()

    assert len(records) == 0
    assert _consumer_position(ring) == ring.stride
