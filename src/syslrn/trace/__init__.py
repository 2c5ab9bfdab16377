"""Trace files: the event schema, writing while recording, and reading back."""

from syslrn.trace.io import (
    Trace,
    TraceWriter,
    check_writable,
    journal_path,
    read_meta,
    read_trace,
    recover,
    write_trace,
)
from syslrn.trace.schema import EVENT_SCHEMA, SCHEMA_VERSION, table_from_rows

__all__ = [
    "EVENT_SCHEMA",
    "SCHEMA_VERSION",
    "Trace",
    "TraceWriter",
    "check_writable",
    "journal_path",
    "read_meta",
    "read_trace",
    "recover",
    "table_from_rows",
    "write_trace",
]
