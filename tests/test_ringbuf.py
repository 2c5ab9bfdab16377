"""Parsing of ring buffer slots. The kernel's producer cannot be paused in
the middle of a write on demand, so these tests lay out slots in plain
memory the way the kernel does (header, then payload) instead."""

from __future__ import annotations

import numpy as np
import pytest

from syslrn.collect.ringbuf import (
    _BUSY_BIT,
    _DISCARD_BIT,
    committed_records,
    record_dtype,
)

RECORD = 16


def _slots(headers):
    window = np.zeros(len(headers), dtype=record_dtype(RECORD))
    for i, header in enumerate(headers):
        window["len"][i] = header
        window["data"][i] = bytes([i + 1]) * RECORD + bytes(8)
    return window


def test_all_committed_records_copied():
    payload, count = committed_records(_slots([RECORD, RECORD, RECORD]), RECORD)
    assert count == 3
    assert [bytes(p)[0] for p in payload] == [1, 2, 3]
    assert payload.dtype.itemsize == RECORD


def test_busy_record_stops_the_batch():
    headers = [RECORD, int(_BUSY_BIT) | RECORD, RECORD]
    payload, count = committed_records(_slots(headers), RECORD)
    assert count == 1
    assert [bytes(p)[0] for p in payload] == [1]


def test_busy_first_record_gives_empty_batch():
    # Seen in a campaign: the reader met a record still being written at
    # the head of the window and crashed on the empty batch.
    payload, count = committed_records(
        _slots([int(_BUSY_BIT) | RECORD, RECORD]), RECORD
    )
    assert count == 0
    assert len(payload) == 0
    assert payload.dtype.itemsize == RECORD


def test_discarded_record_released_but_not_returned():
    headers = [RECORD, int(_DISCARD_BIT) | RECORD, RECORD]
    payload, count = committed_records(_slots(headers), RECORD)
    assert count == 3
    assert [bytes(p)[0] for p in payload] == [1, 3]


def test_record_of_other_size_rejected():
    with pytest.raises(ValueError, match="record of 24 bytes, expected 16"):
        committed_records(_slots([RECORD, 24]), RECORD)
