"""Processes that the kernel's task iterator did not report, read from procfs.

On some hosts the task iterator does not visit every process (seen with
pid 1 inside a sandbox on Linux 6.18). Those processes still belong in the
snapshot, so they are read from /proc. procfs gives start times in clock
ticks only, so these rows carry FLAG_APPROX_START: their start_ns is within
one tick of the kernel's, not equal to it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

PROC = Path("/proc")
_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
_PF_KTHREAD = 0x00200000


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = (PROC / str(pid) / "stat").read_bytes()
    except OSError:
        return None
    # comm may end inside a UTF-8 character, cut by the kernel at 15 bytes;
    # traces decode it the same way.
    text = raw.decode("utf-8", errors="replace")
    # comm is in parentheses and may itself contain spaces or parentheses.
    head, _, tail = text.rpartition(")")
    comm = head.split("(", 1)[1]
    return [comm, *tail.split()]


def _start_ns(pid: int) -> int | None:
    fields = _stat_fields(pid)
    if fields is None:
        return None
    # Field 22 of proc_pid_stat(5), starttime, in clock ticks since boot.
    return int(fields[20]) * 1_000_000_000 // _TICKS_PER_S


def _unseen_stats(seen: set[int]):
    """Yield (pid, stat fields) of the processes of /proc not in ``seen``."""
    for entry in PROC.iterdir():
        if not entry.name.isdigit() or int(entry.name) in seen:
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None:
            yield int(entry.name), fields


def unseen_comms(seen: set[int], started_before_ns: int) -> dict[int, tuple[str, int]]:
    """Return the comm and start time of each process of /proc not in
    ``seen`` that is not a zombie and started more than a clock tick before
    ``started_before_ns`` (CLOCK_BOOTTIME).

    The monitor passes the time it attached its programs: a later process
    has had its fork seen, and one that has exited since is a zombie or
    gone, so neither may be added again.
    """
    tick_ns = 1_000_000_000 // _TICKS_PER_S
    comms = {}
    for pid, fields in _unseen_stats(seen):
        # Field 3, state; field 22, starttime in clock ticks since boot.
        start_ns = int(fields[20]) * 1_000_000_000 // _TICKS_PER_S
        if fields[1] in ("Z", "X") or start_ns >= started_before_ns - tick_ns:
            continue
        comms[pid] = (fields[0], start_ns)
    return comms


def is_running(pid: int, start_ns: int) -> bool:
    """Return whether process ``pid``, which procfs showed as started at
    ``start_ns``, is still there and not a zombie.

    A process that is gone or a zombie has passed the kernel's exit event.
    Comparing the start time detects a reused pid.
    """
    fields = _stat_fields(pid)
    if fields is None or fields[1] in ("Z", "X"):
        return False
    return int(fields[20]) * 1_000_000_000 // _TICKS_PER_S == start_ns


def missing_processes(seen: set[int], boot_ns: int, self_pid: int) -> np.ndarray:
    """Return snapshot records for the processes of /proc not in ``seen``."""
    # Imported here: events and the trace schema need pyarrow, which the
    # monitor, a user of unseen_comms, does without.
    from syslrn.collect.events import EVENT_DTYPE, KIND_CODES
    from syslrn.trace.schema import FLAG_APPROX_START, FLAG_KTHREAD, SNAPSHOT

    rows = []
    for pid, fields in _unseen_stats(seen | {self_pid}):
        ppid = int(fields[2])
        flags = FLAG_APPROX_START
        if int(fields[7]) & _PF_KTHREAD:
            flags |= FLAG_KTHREAD
        rows.append((pid, ppid, fields[0], flags, int(fields[20])))
    records = np.zeros(len(rows), dtype=EVENT_DTYPE)
    for i, (pid, ppid, comm, flags, ticks) in enumerate(rows):
        record = records[i]
        record["kind"] = KIND_CODES[SNAPSHOT]
        record["ts_ns"] = boot_ns
        record["pid"] = record["tid"] = pid
        record["ppid"] = ppid
        record["start_ns"] = ticks * 1_000_000_000 // _TICKS_PER_S
        record["parent_start_ns"] = _start_ns(ppid) or 0 if ppid else 0
        record["comm"] = comm.encode()[:15]
        record["flags"] = flags
    return records
