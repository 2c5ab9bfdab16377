"""Hand-built traces of known workloads, for the learning tests.

:func:`shell_workload_rows` stands for a recording of ``syslrn record --
sh workload.sh``: a shell that, for each request, forks children that run
``/usr/bin/worker``, next to background processes whose activity does not
depend on the requests. Each helper documents the graph it produces, so
tests can state exact counts and degrees.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from syslrn.trace import table_from_rows, write_trace
from syslrn.trace.schema import FLAG_DRIVER

HOST = "h1"
SHELL_PID = 1000


class _Clock:
    def __init__(self) -> None:
        self.now = 1_000_000_000

    def tick(self, step: int = 1_000_000) -> int:
        self.now += step
        return self.now


def shell_workload_rows(
    requests: int,
    children: int,
    *,
    missing: int = 0,
    background_jobs: int = 0,
    journal_connects: int = 0,
    host: str = HOST,
    driven: bool = False,
) -> list[dict]:
    """Rows of one run of the shell workload.

    Graph (node types, multigraph degrees):

    - ``init`` (snapshot, pid 1): parent of ``systemd-journald`` and ``cron``,
      which were created before the run, so no spawn edge joins them.
    - ``systemd-journald`` and ``cron`` (snapshots): journald accepts
      ``journal_connects`` unix connections; cron forks the backup jobs.
    - ``sh`` (pid 1000, exec'd, driver-flagged, parent not traced): forks
      ``(children - missing) * requests`` workers.
    - ``worker``: one per child, degree 1 (its spawn edge).
    - ``backup``: ``background_jobs`` jobs forked by cron; the first
      ``journal_connects`` of them connect to journald's socket.
    """
    clock = _Clock()
    rows = [
        dict(
            ts_ns=clock.now, host=host, kind="snapshot", pid=1, start_ns=10, comm="init"
        ),
        dict(
            ts_ns=clock.now,
            host=host,
            kind="snapshot",
            pid=200,
            start_ns=20,
            ppid=1,
            parent_start_ns=10,
            comm="systemd-journal",
            filename="/usr/lib/systemd/systemd-journald",
        ),
        dict(
            ts_ns=clock.now,
            host=host,
            kind="snapshot",
            pid=300,
            start_ns=30,
            ppid=1,
            parent_start_ns=10,
            comm="cron",
        ),
    ]
    shell_start = clock.tick()
    flags = FLAG_DRIVER
    rows.append(
        dict(
            ts_ns=clock.tick(),
            host=host,
            kind="exec",
            pid=SHELL_PID,
            start_ns=shell_start,
            comm="sh",
            filename="/bin/sh",
            flags=flags,
        )
    )
    next_pid = SHELL_PID + 1
    for _ in range(requests):
        rows.append(
            dict(
                ts_ns=clock.tick(),
                host=host,
                kind="request",
                pid=SHELL_PID,
                start_ns=shell_start,
            )
        )
        for _ in range(children - missing):
            start = clock.tick()
            pid, next_pid = next_pid, next_pid + 1
            rows += [
                dict(
                    ts_ns=start,
                    host=host,
                    kind="fork",
                    pid=pid,
                    start_ns=start,
                    ppid=SHELL_PID,
                    parent_start_ns=shell_start,
                    comm="sh",
                    flags=flags,
                ),
                dict(
                    ts_ns=clock.tick(),
                    host=host,
                    kind="exec",
                    pid=pid,
                    start_ns=start,
                    comm="sh",
                    filename="/usr/bin/worker",
                    flags=flags,
                ),
                dict(
                    ts_ns=clock.tick(),
                    host=host,
                    kind="exit",
                    pid=pid,
                    start_ns=start,
                    comm="worker",
                    exit_code=0,
                    flags=flags,
                ),
            ]
    for job in range(background_jobs):
        start = clock.tick()
        pid, next_pid = next_pid, next_pid + 1
        rows += [
            dict(
                ts_ns=start,
                host=host,
                kind="fork",
                pid=pid,
                start_ns=start,
                ppid=300,
                parent_start_ns=30,
                comm="cron",
            ),
            dict(
                ts_ns=clock.tick(),
                host=host,
                kind="exec",
                pid=pid,
                start_ns=start,
                comm="cron",
                filename="/usr/sbin/backup",
            ),
        ]
        if job < journal_connects:
            sock = 0xABC000 + job
            rows += [
                dict(
                    ts_ns=clock.tick(),
                    host=host,
                    kind="connect",
                    pid=pid,
                    start_ns=start,
                    comm="backup",
                    family="unix",
                    path="/run/systemd/journal/stdout",
                    sock_id=sock,
                ),
                dict(
                    ts_ns=clock.tick(),
                    host=host,
                    kind="accept",
                    pid=200,
                    start_ns=20,
                    comm="systemd-journal",
                    family="unix",
                    path="/run/systemd/journal/stdout",
                    sock_id=sock + 1,
                    peer_id=sock,
                ),
            ]
    return rows


def write_shell_run(
    path: Path,
    requests: int,
    children: int,
    *,
    seed: int = 0,
    missing: int = 0,
    labels: dict | None = None,
) -> Path:
    """Write one shell-workload run with random, request-independent background."""
    rng = np.random.default_rng(seed)
    jobs = int(rng.integers(0, 6))
    rows = shell_workload_rows(
        requests,
        children,
        missing=missing,
        background_jobs=jobs,
        journal_connects=int(rng.integers(0, jobs + 1)),
    )
    meta = {"host": HOST, "requests": requests, "labels": dict(labels or {})}
    return write_trace(path, table_from_rows(rows), meta)


def write_shell_campaign(
    directory: Path,
    *,
    children: int = 2,
    levels: tuple[int, ...] = (4, 8, 12, 16, 20),
    repeats: int = 3,
) -> list[Path]:
    """Write ``repeats`` failure-free runs at each request level; return their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for level in levels:
        for repeat in range(repeats):
            path = directory / f"run-r{level:02d}-{repeat}.parquet"
            paths.append(
                write_shell_run(
                    path,
                    level,
                    children,
                    seed=level * 10 + repeat,
                    labels={"fault": "none"},
                )
            )
    return paths
