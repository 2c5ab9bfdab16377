"""Read and write trace files.

A finished trace is a Parquet file (zstd) with the columns of
:data:`syslrn.trace.schema.EVENT_SCHEMA` and the run's metadata document.

While a recording runs, events go to a journal beside the target,
``<target>.journal``, in the Arrow IPC stream format: each batch is a
self-contained message, so a journal cut short by a crash or a kill still
reads back up to its last whole batch. Closing the writer turns the journal
into the Parquet file, one row group per batch, and removes it. A reader
given a target that has only a journal recovers from the journal, so an
interrupted recording never loses what it had written.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from syslrn.errors import SyslrnError, TraceError
from syslrn.paths import check_parent_writable
from syslrn.text import format_count
from syslrn.trace.schema import EVENT_SCHEMA, METADATA_KEY, REQUEST, SCHEMA_VERSION

log = logging.getLogger(__name__)

JOURNAL_SUFFIX = ".journal"

#: Traces reveal what a host runs and whom it talks to: owner-only by default.
FILE_MODE = 0o600


@dataclass
class Trace:
    """A trace loaded in memory: its event table and its metadata document."""

    table: pa.Table
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.meta.get("labels") or {})

    @property
    def host(self) -> str:
        return str(self.meta.get("host", ""))

    @property
    def requests(self) -> int | None:
        """Return the run's request count, or None when it has none.

        The count measured at the trigger socket wins over a ``requests``
        label, because it is what the online monitor will count too.
        """
        counted = self.meta.get("requests")
        if counted is not None:
            return int(counted)
        label = self.labels.get("requests")
        if label is None:
            return None
        try:
            return int(label)
        except ValueError:
            raise TraceError(
                f"{self.path or 'trace'}: label requests={label!r} is not an integer"
            ) from None

    @property
    def name(self) -> str:
        return self.path.name if self.path is not None else "<memory>"


def journal_path(path: str | os.PathLike) -> Path:
    """Return the journal path used while ``path`` is being recorded."""
    path = Path(path)
    return path.with_name(path.name + JOURNAL_SUFFIX)


def _schema_with_meta(meta: dict[str, Any]) -> pa.Schema:
    document = dict(meta)
    document.setdefault("schema_version", SCHEMA_VERSION)
    return EVENT_SCHEMA.with_metadata({METADATA_KEY: json.dumps(document)})


def _open_private(path: Path):
    """Open ``path`` for writing, created with :data:`FILE_MODE`."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    os.fchmod(fd, FILE_MODE)
    return os.fdopen(fd, "wb")


def check_writable(path: str | os.PathLike) -> Path:
    """Check that a trace can be created at ``path``; raise TraceError if not."""
    path = Path(path)
    if path.is_dir():
        raise TraceError(f"output {path}: is a directory; give a file name")
    check_parent_writable(path, TraceError)
    if path.exists() and not path.is_file():
        raise TraceError(
            f"output {path}: exists and is not a regular file (a device or a "
            "socket); give a file name"
        )
    if path.exists() and not os.access(path, os.W_OK):
        raise TraceError(f"output {path}: file exists and is not writable")
    return path


def check_not_input(output: str | os.PathLike, inputs) -> None:
    """Raise SyslrnError when ``output`` is one of ``inputs`` or inside one."""
    target = Path(output).resolve()
    for item in inputs:
        source = Path(item).resolve()
        if target == source or source in target.parents:
            raise SyslrnError(
                f"output {output}: is also the input {item}; writing it would "
                "destroy that input, so choose another output path"
            )


def check_new_output(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Check that recording to ``path`` loses nothing already recorded.

    An existing trace is kept unless ``overwrite``; a journal beside it means
    another recording writes there now, or one was interrupted.
    """
    path = check_writable(path)
    journal = journal_path(path)
    if journal.exists():
        raise TraceError(
            f"output {path}: {journal.name} exists, so another recording writes "
            f"there or one was interrupted; run 'syslrn trace recover {path}' "
            "or choose another output path"
        )
    if path.exists() and not overwrite:
        raise TraceError(
            f"output {path}: file exists; pass --force to overwrite it or choose "
            "another output path"
        )
    return path


def write_trace(path: str | os.PathLike, table: pa.Table, meta: dict[str, Any]) -> Path:
    """Write a whole trace at once, e.g. a hand-built one or a merge."""
    path = check_writable(path)
    table = table.cast(EVENT_SCHEMA).replace_schema_metadata(
        _schema_with_meta(meta).metadata
    )
    with _open_private(path) as sink:
        pq.write_table(table, sink, compression="zstd")
    return path


class TraceWriter:
    """Write a trace batch by batch, durable after each batch.

    Parameters
    ----------
    path : path-like
        The Parquet file to produce.
    meta : dict
        The metadata document known at the start (host, labels, probes...).
        :meth:`close` merges what is known only at the end (lost counts,
        request count, stop time).
    """

    def __init__(self, path: str | os.PathLike, meta: dict[str, Any]):
        self.path = check_writable(path)
        self.journal = journal_path(self.path)
        self.meta = dict(meta)
        self.rows = 0
        try:
            self._sink = _open_private(self.journal)
        except OSError as exc:
            raise TraceError(
                f"output {self.path}: cannot create {self.journal.name} "
                f"({exc.strerror}); choose another output path"
            ) from None
        self._writer = ipc.new_stream(
            self._sink,
            _schema_with_meta(self.meta),
            options=ipc.IpcWriteOptions(compression="zstd"),
        )
        self._closed = False

    def write_batch(self, batch: pa.RecordBatch | pa.Table) -> None:
        """Append events and flush them to disk."""
        if batch.num_rows == 0:
            return
        if isinstance(batch, pa.RecordBatch):
            batch = pa.Table.from_batches([batch])
        self._writer.write_table(batch.cast(EVENT_SCHEMA))
        self._sink.flush()
        self.rows += batch.num_rows

    def close(self, final_meta: dict[str, Any] | None = None) -> Path:
        """Finish the trace: convert the journal to Parquet and remove it."""
        if self._closed:
            return self.path
        self._closed = True
        self._writer.close()
        self._sink.close()
        meta = dict(self.meta)
        meta.update(final_meta or {})
        meta["complete"] = True
        _journal_to_parquet(self.journal, self.path, meta)
        self.journal.unlink()
        log.info("trace %s closed with %s", self.path, format_count(self.rows, "event"))
        return self.path

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _read_journal(journal: Path) -> tuple[list[pa.RecordBatch], dict[str, Any]]:
    """Read the whole batches of a journal, ignoring a torn last batch."""
    batches: list[pa.RecordBatch] = []
    try:
        reader = ipc.open_stream(pa.OSFile(str(journal), "rb"))
    except (pa.ArrowInvalid, OSError) as exc:
        raise TraceError(
            f"{journal}: journal has no readable header ({exc}); "
            "nothing was recorded in it"
        ) from None
    meta = _decode_meta(reader.schema, journal)
    while True:
        try:
            batches.append(reader.read_next_batch())
        except StopIteration:
            break
        except (pa.ArrowInvalid, OSError):
            log.warning("%s: last batch torn by the interruption, dropped", journal)
            break
    return batches, meta


def _journal_to_parquet(journal: Path, path: Path, meta: dict[str, Any]) -> int:
    batches, _ = _read_journal(journal)
    schema = _schema_with_meta(meta)
    tmp = path.with_name(path.name + ".tmp")
    with (
        _open_private(tmp) as sink,
        pq.ParquetWriter(sink, schema, compression="zstd") as writer,
    ):
        for batch in batches:
            writer.write_batch(batch.cast(EVENT_SCHEMA))
    os.replace(tmp, path)
    return sum(b.num_rows for b in batches)


def _count_requests(batches: list[pa.RecordBatch], meta: dict[str, Any]) -> None:
    """Fill in the request count of an interrupted recording from its rows.

    The recorder writes the count only when it stops; the request rows,
    one per accept on the trigger, give the same number.
    """
    if meta.get("trigger") and meta.get("requests") is None:
        meta["requests"] = sum(
            int(
                pc.sum(pc.equal(b.column("kind").cast(pa.string()), REQUEST)).as_py()
                or 0
            )
            for b in batches
        )


def recover(path: str | os.PathLike) -> Path:
    """Turn the journal of an interrupted recording into a Parquet trace."""
    path = Path(path)
    journal = journal_path(path)
    if not journal.exists():
        raise TraceError(f"{path}: no journal {journal.name} to recover from")
    batches, meta = _read_journal(journal)
    meta["complete"] = False
    meta["recovered"] = True
    _count_requests(batches, meta)
    rows = _journal_to_parquet(journal, path, meta)
    journal.unlink()
    log.warning(
        "%s: recovered %s of an interrupted recording",
        path,
        format_count(rows, "event"),
    )
    return path


def _decode_meta(schema: pa.Schema, path: Path) -> dict[str, Any]:
    raw = (schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        raise TraceError(
            f"{path}: not a syslrn trace (no '{METADATA_KEY.decode()}' metadata)"
        )
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise TraceError(f"{path}: trace metadata is not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise TraceError(f"{path}: trace metadata is not a JSON object")
    version = meta.get("schema_version")
    if version != SCHEMA_VERSION:
        raise TraceError(
            f"{path}: trace schema version {version}, this syslrn reads version "
            f"{SCHEMA_VERSION}; record it again with this version"
        )
    labels = meta.get("labels")
    if labels is not None and not isinstance(labels, dict):
        raise TraceError(f"{path}: trace metadata 'labels' is not a JSON object")
    requests = meta.get("requests")
    if requests is not None and (not isinstance(requests, int) or requests < 0):
        raise TraceError(
            f"{path}: trace metadata 'requests' is {requests!r}, not a count"
        )
    return meta


def read_trace(path: str | os.PathLike, columns: list[str] | None = None) -> Trace:
    """Read a trace file, recovering an interrupted recording's journal.

    Raises
    ------
    TraceError
        The file is missing, truncated, not Parquet, not a syslrn trace, or
        of another schema version. The message names the file.
    """
    path = Path(path)
    if not path.exists():
        journal = journal_path(path)
        if journal.exists():
            batches, meta = _read_journal(journal)
            meta["complete"] = False
            _count_requests(batches, meta)
            table = pa.Table.from_batches(batches, schema=EVENT_SCHEMA)
            log.warning(
                "%s: recording was interrupted; read %s from %s "
                "(run 'syslrn trace recover %s' to finish the file)",
                path,
                format_count(table.num_rows, "event"),
                journal.name,
                path,
            )
            if columns is not None:
                table = table.select(columns)
            return Trace(table=table, meta=meta, path=path)
        raise TraceError(f"{path}: trace file not found")
    try:
        pfile = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise TraceError(
            f"{path}: not a readable Parquet trace ({exc}); the file is "
            "truncated or corrupt"
        ) from None
    meta = _decode_meta(pfile.schema_arrow, path)
    missing = set(columns or EVENT_SCHEMA.names) - set(pfile.schema_arrow.names)
    if missing:
        raise TraceError(f"{path}: trace lacks columns {sorted(missing)}")
    try:
        table = pfile.read(columns=columns)
    except (pa.ArrowInvalid, OSError) as exc:
        raise TraceError(f"{path}: trace data is corrupt ({exc})") from None
    return Trace(table=table, meta=meta, path=path)


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """Read only the metadata document of a trace."""
    path = Path(path)
    if not path.exists() and journal_path(path).exists():
        return read_trace(path, columns=["ts_ns"]).meta
    try:
        schema = pq.read_schema(path)
    except FileNotFoundError:
        raise TraceError(f"{path}: trace file not found") from None
    except (pa.ArrowInvalid, OSError) as exc:
        raise TraceError(f"{path}: not a readable Parquet trace ({exc})") from None
    return _decode_meta(schema, path)
