"""Trace files: round trip, journal recovery, bad files."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from syslrn.errors import TraceError
from syslrn.trace import (
    TraceWriter,
    journal_path,
    read_meta,
    read_trace,
    recover,
    table_from_rows,
    write_trace,
)
from syslrn.trace.schema import METADATA_KEY


def _rows(n, start=0):
    return [
        {
            "ts_ns": start + i,
            "host": "h",
            "kind": "exec",
            "pid": 100 + i,
            "start_ns": 5,
            "comm": "sh",
            "filename": f"/bin/p{i}",
        }
        for i in range(n)
    ]


def test_write_and_read_round_trip(trace_path):
    write_trace(
        trace_path, table_from_rows(_rows(3)), {"host": "h", "labels": {"a": "1"}}
    )
    trace = read_trace(trace_path)
    assert trace.table.num_rows == 3
    assert trace.table.column("filename").to_pylist() == [
        "/bin/p0",
        "/bin/p1",
        "/bin/p2",
    ]
    assert trace.labels == {"a": "1"}
    assert oct(trace_path.stat().st_mode & 0o777) == "0o600"


def test_writer_closes_into_parquet(trace_path):
    writer = TraceWriter(trace_path, {"host": "h"})
    writer.write_batch(table_from_rows(_rows(2)))
    writer.write_batch(table_from_rows(_rows(3, start=10)))
    assert journal_path(trace_path).exists()
    writer.close({"requests": 7})
    assert not journal_path(trace_path).exists()
    assert pq.ParquetFile(trace_path).metadata.num_row_groups == 2
    trace = read_trace(trace_path)
    assert trace.table.num_rows == 5
    assert trace.meta["complete"] is True
    assert trace.requests == 7


def test_torn_journal_keeps_whole_batches(trace_path):
    writer = TraceWriter(trace_path, {"host": "h"})
    writer.write_batch(table_from_rows(_rows(4)))
    writer.write_batch(table_from_rows(_rows(4, start=10)))
    writer._sink.flush()
    journal = journal_path(trace_path)
    data = journal.read_bytes()
    # Cut into the second batch, as a crash in the middle of a write would.
    journal.write_bytes(data[: len(data) - 40])

    trace = read_trace(trace_path)
    assert trace.table.num_rows == 4
    assert trace.meta["complete"] is False
    recover(trace_path)
    assert not journal.exists()
    assert read_trace(trace_path).table.num_rows == 4
    assert read_meta(trace_path)["recovered"] is True


def test_truncated_parquet_names_file(trace_path):
    write_trace(trace_path, table_from_rows(_rows(3)), {"host": "h"})
    data = trace_path.read_bytes()
    trace_path.write_bytes(data[: len(data) // 2])
    with pytest.raises(TraceError, match=str(trace_path)) as err:
        read_trace(trace_path)
    assert "truncated or corrupt" in str(err.value)


def test_missing_trace_names_file(tmp_path):
    with pytest.raises(TraceError, match="trace file not found"):
        read_trace(tmp_path / "absent.parquet")


def test_other_schema_version_names_both(trace_path):
    table = table_from_rows(_rows(1))
    meta = {METADATA_KEY: json.dumps({"schema_version": 99})}
    pq.write_table(table.replace_schema_metadata(meta), trace_path)
    with pytest.raises(
        TraceError, match="schema version 99, this syslrn reads version 1"
    ):
        read_trace(trace_path)


def test_plain_parquet_is_not_a_trace(trace_path):
    pq.write_table(pa.table({"x": [1]}), trace_path)
    with pytest.raises(TraceError, match="not a syslrn trace"):
        read_trace(trace_path)


def test_unknown_column_in_rows_rejected():
    with pytest.raises(ValueError, match="unknown trace columns"):
        table_from_rows([{"ts_ns": 1, "bogus": 2}])
