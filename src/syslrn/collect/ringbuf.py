"""A BPF ring buffer consumer that copies records out in batches.

Every record the recorder's programs write has the same size, so the
records between the consumer and producer positions sit at a fixed stride
and a whole batch becomes one numpy array, with no Python call per event.
The kernel maps the data area twice in a row, so a batch that wraps around
the end is still contiguous in the mapping.
"""

from __future__ import annotations

import mmap
import struct

import numpy as np

# Bits of a record header's length word (include/uapi/linux/bpf.h).
_BUSY_BIT = np.uint32(1 << 31)
_DISCARD_BIT = np.uint32(1 << 30)
_LENGTH_MASK = np.uint32((1 << 30) - 1)
_HEADER_SIZE = 8


class RingBuffer:
    """Consume fixed-size records from a BPF_MAP_TYPE_RINGBUF map.

    Parameters
    ----------
    map_fd : int
        File descriptor of the ring buffer map.
    data_size : int
        The map's max_entries: the size of the data area in bytes.
    record_size : int
        Size of each record's payload, as submitted by the programs.
    """

    def __init__(self, map_fd: int, data_size: int, record_size: int):
        page = mmap.PAGESIZE
        self.data_size = data_size
        self.record_size = record_size
        self.stride = (record_size + _HEADER_SIZE + 7) & ~7
        self._mask = data_size - 1
        self._consumer = mmap.mmap(
            map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0
        )
        self._producer = mmap.mmap(
            map_fd, page + 2 * data_size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page
        )
        self._page = page
        self._dtype = np.dtype(
            [
                ("len", "<u4"),
                ("pg_off", "<u4"),
                ("data", f"V{self.stride - _HEADER_SIZE}"),
            ]
        )

    def _positions(self) -> tuple[int, int]:
        (consumer,) = struct.unpack_from("<Q", self._consumer, 0)
        (producer,) = struct.unpack_from("<Q", self._producer, 0)
        return consumer, producer

    def pending_bytes(self) -> int:
        consumer, producer = self._positions()
        return producer - consumer

    def consume(self, max_records: int = 1 << 16) -> np.ndarray:
        """Copy out up to ``max_records`` committed records and release them.

        Returns an array of raw payloads (dtype ``V<record_size>``); records
        still being written stop the batch and wait for the next call.
        """
        consumer, producer = self._positions()
        count = min((producer - consumer) // self.stride, max_records)
        if count <= 0:
            return np.empty(0, dtype=f"V{self.record_size}")

        start = self._page + (consumer & self._mask)
        window = np.frombuffer(
            self._producer, dtype=self._dtype, count=count, offset=start
        )
        try:
            payload, count = committed_records(window, self.record_size)
        finally:
            # The view pins the mapping; close() fails while one is alive.
            del window
        if count:
            struct.pack_into("<Q", self._consumer, 0, consumer + count * self.stride)
        return payload

    def close(self) -> None:
        self._consumer.close()
        self._producer.close()


def record_dtype(record_size: int) -> np.dtype:
    """Return the dtype of one ring buffer slot: header, then padded payload."""
    stride = (record_size + _HEADER_SIZE + 7) & ~7
    return np.dtype(
        [("len", "<u4"), ("pg_off", "<u4"), ("data", f"V{stride - _HEADER_SIZE}")]
    )


def committed_records(window: np.ndarray, record_size: int) -> tuple[np.ndarray, int]:
    """Copy the payloads of the committed records at the head of ``window``.

    Returns the payloads (dtype ``V<record_size>``, discarded records left
    out) and the number of slots to release, which stops before the first
    record still being written.
    """
    lengths = window["len"]
    busy = np.flatnonzero(lengths & _BUSY_BIT)
    count = int(busy[0]) if busy.size else len(window)
    lengths = lengths[:count]
    sizes = lengths & _LENGTH_MASK
    if np.any(sizes != record_size):
        bad = int(sizes[sizes != record_size][0])
        raise ValueError(
            f"ring buffer record of {bad} bytes, expected {record_size}: "
            "the BPF object and syslrn.collect.events disagree"
        )
    # NOTE: x86 keeps loads in order, so a payload read after its header
    # is the one the producer committed; a weakly ordered CPU would need
    # an acquire load of each header here.
    keep = (lengths & _DISCARD_BIT) == 0
    payload = window["data"][:count][keep]
    if len(payload) == 0:
        return np.empty(0, dtype=f"V{record_size}"), count
    raw = np.ascontiguousarray(payload).view(np.uint8).reshape(len(payload), -1)
    out = np.ascontiguousarray(raw[:, :record_size])
    return out.view(f"V{record_size}").reshape(-1), count
