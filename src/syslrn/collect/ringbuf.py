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
            payload, count = self._committed(window)
        finally:
            # The view pins the mapping; close() fails while one is alive.
            del window
        if count:
            struct.pack_into("<Q", self._consumer, 0, consumer + count * self.stride)
        if len(payload) == 0:
            # The head record is still being written, or all were discarded.
            return np.empty(0, dtype=f"V{self.record_size}")
        raw = payload.view(np.uint8).reshape(len(payload), -1)[:, : self.record_size]
        return np.ascontiguousarray(raw).view(f"V{self.record_size}").reshape(-1)

    def _committed(self, window: np.ndarray) -> tuple[np.ndarray, int]:
        """Copy the payloads of the committed records at the head of window."""
        lengths = window["len"]
        busy = np.flatnonzero(lengths & _BUSY_BIT)
        count = int(busy[0]) if busy.size else len(window)
        lengths = lengths[:count]
        sizes = lengths & _LENGTH_MASK
        if np.any(sizes != self.record_size):
            bad = int(sizes[sizes != self.record_size][0])
            raise ValueError(
                f"ring buffer record of {bad} bytes, expected {self.record_size}: "
                "the BPF object and syslrn.collect.events disagree"
            )
        # NOTE: x86 keeps loads in order, so reading the header before the
        # payload sees the payload the producer committed; a weakly ordered
        # CPU would need an acquire load of each header here.
        keep = (lengths & _DISCARD_BIT) == 0
        return window["data"][:count][keep].copy(), count

    def close(self) -> None:
        self._consumer.close()
        self._producer.close()
