"""The full recorder: every process and stream connection event of the host,
written to a trace file as the recording goes.

The recording process leaves itself out of the trace. Every process it
forks after :meth:`Recorder.start` is the root of the workload driver's
tree: the kernel tags it and its descendants with ``FLAG_DRIVER``.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import secrets
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from syslrn.collect import events, procfs
from syslrn.collect.build import build_object
from syslrn.collect.clock import boottime_ns
from syslrn.collect.libbpf import BpfObject, num_possible_cpus
from syslrn.collect.privileges import check_bpf_allowed
from syslrn.collect.ringbuf import RingBuffer
from syslrn.collect.trigger import Trigger, parse_trigger, set_trigger
from syslrn.text import format_count
from syslrn.trace import TraceWriter, check_writable
from syslrn.trace.schema import SCHEMA_VERSION

log = logging.getLogger(__name__)

OBJECT_NAME = "record"
# 64 MiB hold about 170,000 records: five seconds of a connection storm at
# 34,000 events/s, which covers the reader being starved of CPU by the load
# it records on a small machine.
DEFAULT_RINGBUF_BYTES = 64 << 20
# User space reads the ring buffer on this period; at 60,000 events/s of
# 392 bytes that is about 1.2 MB a read.
POLL_INTERVAL_S = 0.05
# Batches are gathered into row groups of at least this many rows, or
# written after FLUSH_INTERVAL_S, whichever comes first.
ROW_GROUP_ROWS = 65536
FLUSH_INTERVAL_S = 1.0

COUNTERS = ("reserve_failed", "short_read", "truncated", "map_full", "requests")


class Config(ctypes.Structure):
    """``struct config`` of bpf/events.h: the object's read-only globals."""

    _fields_ = [
        ("self_tgid", ctypes.c_uint32),
        ("trigger_kind", ctypes.c_uint32),
        ("trigger_port", ctypes.c_uint32),
        ("trigger_path_len", ctypes.c_uint32),
        ("sock_key", ctypes.c_uint64),
        ("trigger_path", ctypes.c_char * 108),
    ]


def configure(obj: BpfObject, trigger: Trigger | None) -> None:
    """Write the recorder's pid, the trigger and a fresh socket-id mask into
    the object's read-only globals, before load."""
    config = Config()
    config.self_tgid = os.getpid()
    config.sock_key = secrets.randbits(64)
    set_trigger(config, trigger)
    obj.set_rodata(config)


def read_counters(obj: BpfObject) -> dict[str, int]:
    """Sum the per-CPU counters of the object's ``counters`` map."""
    counters_map = obj.map("counters")
    cpus = num_possible_cpus()
    totals = {}
    for index, name in enumerate(COUNTERS):
        raw = counters_map.lookup(struct.pack("<I", index), value_size=8 * cpus)
        totals[name] = int(np.frombuffer(raw, dtype="<u8").sum()) if raw else 0
    return totals


class Recorder:
    """Record the whole host into a trace file.

    Parameters
    ----------
    output : path-like
        The trace file to write (Parquet); checked before any BPF is loaded.
    trigger : str or None
        ``tcp:PORT`` or ``unix:PATH``: accepts on that socket are requests.
    labels : dict
        Run labels stored in the trace metadata (``requests``, ``phase``...).
    host : str or None
        Host name stored in every row; default: this machine's host name.
    ringbuf_bytes : int
        Size of the ring buffer, a power of two of at least one page.
    """

    def __init__(
        self,
        output: str | os.PathLike,
        trigger: str | None = None,
        labels: dict[str, str] | None = None,
        host: str | None = None,
        ringbuf_bytes: int = DEFAULT_RINGBUF_BYTES,
    ):
        self.output = Path(output)
        self.trigger = parse_trigger(trigger) if trigger else None
        self.labels = {str(k): str(v) for k, v in (labels or {}).items()}
        self.host = host or socket.gethostname()
        if ringbuf_bytes < 4096 or ringbuf_bytes & (ringbuf_bytes - 1):
            raise ValueError(
                f"ringbuf_bytes={ringbuf_bytes}: must be a power of two of at "
                "least 4096"
            )
        self.ringbuf_bytes = ringbuf_bytes
        self.extra_meta: dict[str, Any] = {}
        self._obj: BpfObject | None = None
        self._ring: RingBuffer | None = None
        self._writer: TraceWriter | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._pending: list[np.ndarray] = []
        self._pending_rows = 0
        self._last_flush = 0.0
        self.events = 0

    # -- start -------------------------------------------------------------

    def start(self) -> Recorder:
        """Load and attach the probes, snapshot live processes, start reading."""
        check_writable(self.output)
        check_bpf_allowed("syslrn record")
        obj_path = build_object(OBJECT_NAME)

        obj = BpfObject(obj_path)
        try:
            obj.map("events").set_max_entries(self.ringbuf_bytes)
            configure(obj, self.trigger)
            obj.load()
            self._obj = obj
            self._ring = RingBuffer(
                obj.map("events").fd, self.ringbuf_bytes, events.EVENT_DTYPE.itemsize
            )
            obj.attach_all()
            self.started_ns = boottime_ns()
            # Boot time is not comparable between hosts, so the wall clock
            # is stored too, for syslrn merge to check that traces overlap.
            self.started_unix_ns = time.time_ns()
            self._writer = TraceWriter(self.output, self._initial_meta(obj))
            snapshot = obj.iterate(obj.program("snapshot_tasks"))
        except BaseException:
            obj.close()
            self._obj = None
            raise

        self._write_snapshot(snapshot)
        self._last_flush = time.monotonic()
        self._thread = threading.Thread(
            target=self._run, name="syslrn-recorder", daemon=True
        )
        self._thread.start()
        log.info(
            "recording to %s (pid %d, trigger %s, %d probes)",
            self.output,
            os.getpid(),
            self.trigger or "none",
            len([p for p in obj.programs() if not p.section.startswith("iter/")]),
        )
        return self

    def _write_snapshot(self, snapshot: bytes) -> None:
        records = np.frombuffer(snapshot, dtype=events.EVENT_DTYPE)
        missing = procfs.missing_processes(
            set(records["pid"].tolist()), self.started_ns, os.getpid()
        )
        if len(missing):
            log.info(
                "task iterator missed %s (pids %s); read them from /proc",
                format_count(len(missing), "process", "processes"),
                missing["pid"][:8].tolist(),
            )
        self._write(
            events.table_from_records(np.concatenate([records, missing]), self.host)
        )

    def _initial_meta(self, obj: BpfObject) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "host": self.host,
            "kernel": platform.release(),
            "probes": [{"program": p.name, "hook": p.section} for p in obj.programs()],
            "labels": self.labels,
            "trigger": str(self.trigger) if self.trigger else None,
            "recorder_pid": os.getpid(),
            "started_ns": self.started_ns,
            "started_unix_ns": self.started_unix_ns,
            "ringbuf_bytes": self.ringbuf_bytes,
            "complete": False,
            **self.extra_meta,
        }

    # -- reading -----------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stop.wait(POLL_INTERVAL_S):
                self._drain()
                if time.monotonic() - self._last_flush >= FLUSH_INTERVAL_S:
                    self._flush()
        except BaseException as exc:  # surfaced by stop()
            log.exception("recorder thread failed")
            self._error = exc

    def _drain(self) -> None:
        """Copy committed records out of the ring buffer, to decode later.

        Decoding has a fixed cost per call, so records are decoded once per
        row group rather than once per read.
        """
        while True:
            raw = self._ring.consume()
            if len(raw) == 0:
                return
            self._pending.append(raw)
            self._pending_rows += len(raw)
            if self._pending_rows >= ROW_GROUP_ROWS:
                self._flush()

    def _write(self, table: pa.Table) -> None:
        self.events += table.num_rows
        self._writer.write_batch(table)

    def _flush(self) -> None:
        self._last_flush = time.monotonic()
        if not self._pending:
            return
        raw = np.concatenate(self._pending)
        self._pending.clear()
        self._pending_rows = 0
        self._write(events.decode(raw, self.host))

    # -- stop --------------------------------------------------------------

    def stop(self) -> dict[str, Any]:
        """Detach, read what is left, finish the trace; return its metadata."""
        if self._obj is None:
            raise RuntimeError("the recorder was not started")
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        obj = self._obj
        try:
            obj.detach()
            stopped_ns = boottime_ns()
            stopped_unix_ns = time.time_ns()
            if self._error is None:
                self._drain()
            self._flush()

            counters = read_counters(obj)
            lost = {k: v for k, v in counters.items() if k != "requests"}
            final = {
                "stopped_ns": stopped_ns,
                "stopped_unix_ns": stopped_unix_ns,
                "duration_s": (stopped_ns - self.started_ns) / 1e9,
                "requests": counters["requests"] if self.trigger else None,
                "lost": lost,
                "lost_events": lost["reserve_failed"],
                "events": self.events,
                **self.extra_meta,
            }
            path = self._writer.close(final)
        finally:
            if self._ring is not None:
                self._ring.close()
            obj.close()
            self._obj = None
        if lost["reserve_failed"]:
            log.warning(
                "%s: %s lost (ring buffer reservations failed)",
                path,
                format_count(lost["reserve_failed"], "event"),
            )
        if self._error is not None:
            raise self._error
        meta = dict(self._writer.meta)
        meta.update(final)
        log.info("recorded %s to %s", format_count(self.events, "event"), path)
        return meta

    def __enter__(self) -> Recorder:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        if self._obj is not None:
            self.stop()
