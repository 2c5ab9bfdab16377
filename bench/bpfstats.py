"""Run counts and run times of the BPF programs a process holds.

The kernel counts both per program only while run-time statistics are
enabled. :class:`RuntimeStats` enables them through ``bpf_enable_stats``,
whose file descriptor keeps them on until it is closed. A crashed run
therefore leaves the host setting (``kernel.bpf_stats_enabled``) as it
found it.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from syslrn.collect.libbpf import lib

log = logging.getLogger(__name__)

BPF_STATS_RUN_TIME = 0


@dataclass(frozen=True)
class ProgramStats:
    """One program's counters as the kernel reports them."""

    prog_id: int
    name: str
    run_cnt: int
    run_time_ns: int


class RuntimeStats:
    """Keep the kernel's BPF run-time statistics on while the block runs."""

    def __init__(self):
        self.fd = -1

    def __enter__(self) -> RuntimeStats:
        enable = lib().bpf_enable_stats
        enable.restype = ctypes.c_int
        enable.argtypes = [ctypes.c_int]
        fd = enable(BPF_STATS_RUN_TIME)
        if fd < 0:
            raise OSError(-fd, f"bpf_enable_stats failed: {os.strerror(-fd)}")
        self.fd = fd
        return self

    def __exit__(self, *exc_info) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _fdinfo_programs(pid: int) -> dict[int, dict[str, int]]:
    """Read prog_id, run_cnt and run_time_ns of the program fds of ``pid``.

    Link fds name a prog_id too but carry no counters, so only the entries
    with a run_cnt are kept.
    """
    programs: dict[int, dict[str, int]] = {}
    for entry in Path(f"/proc/{pid}/fdinfo").iterdir():
        try:
            text = entry.read_text()
        except OSError:
            continue  # closed since the listing
        fields = {}
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key in ("prog_id", "run_cnt", "run_time_ns"):
                fields[key] = int(value)
        if "prog_id" in fields and "run_cnt" in fields:
            programs[fields["prog_id"]] = fields
    return programs


def _program_names() -> dict[int, str]:
    done = subprocess.run(
        ["bpftool", "prog", "show", "--json"], capture_output=True, text=True
    )
    if done.returncode != 0:
        log.warning("bpftool prog show failed: %s", done.stderr.strip())
        return {}
    return {p["id"]: p.get("name", "") for p in json.loads(done.stdout or "[]")}


def programs_of(pid: int) -> dict[int, ProgramStats]:
    """Return the counters of every BPF program that process ``pid`` holds."""
    counters = _fdinfo_programs(pid)
    names = _program_names() if counters else {}
    return {
        prog_id: ProgramStats(
            prog_id=prog_id,
            name=names.get(prog_id, f"id{prog_id}"),
            run_cnt=fields["run_cnt"],
            run_time_ns=fields.get("run_time_ns", 0),
        )
        for prog_id, fields in counters.items()
    }


def difference(
    before: dict[int, ProgramStats], after: dict[int, ProgramStats]
) -> dict[str, dict[str, int]]:
    """Return run counts and run times gained between two readings, by name.

    Programs with the same name (bpftrace names its programs after their
    probe) are added up.
    """
    totals: dict[str, dict[str, int]] = {}
    for prog_id, stats in after.items():
        start = before.get(prog_id)
        runs = stats.run_cnt - (start.run_cnt if start else 0)
        time_ns = stats.run_time_ns - (start.run_time_ns if start else 0)
        total = totals.setdefault(stats.name, {"run_cnt": 0, "run_time_ns": 0})
        total["run_cnt"] += runs
        total["run_time_ns"] += time_ns
    return totals


def tracepoint_attachments() -> list[dict[str, Any]]:
    """Return the tracepoint programs attached on the host, each with the pid
    of the process that attached it, as ``bpftool perf show`` lists them."""
    done = subprocess.run(
        ["bpftool", "perf", "show", "--json"], capture_output=True, text=True
    )
    if done.returncode != 0:
        log.warning("bpftool perf show failed: %s", done.stderr.strip())
        return []
    return [
        {"pid": entry["pid"], "tracepoint": entry["tracepoint"]}
        for entry in json.loads(done.stdout or "[]")
        if entry.get("fd_type") == "tracepoint"
    ]
