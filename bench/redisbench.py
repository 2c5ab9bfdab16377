"""A private redis-server on a unix socket, and redis-benchmark against it.

The server listens on no TCP port (``port 0``) and keeps nothing on disk,
so a benchmark measures connection handling and command execution only.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

#: redis-benchmark's test names for the operations measured, as ``-t`` takes them.
OPERATIONS = ("set", "get", "lpush", "lpop")
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0


class BenchmarkError(RuntimeError):
    """redis-server or redis-benchmark failed or printed something unexpected."""


@dataclass(frozen=True)
class BenchmarkResult:
    """One redis-benchmark test: its rate and the CPU time spent on it.

    Attributes
    ----------
    operation : str
        The test name as ``-t`` takes it (``set``, ``get``...).
    requests : int
        Requests sent (``-n``).
    rps : float
        Requests per second as redis-benchmark reports them.
    wall_s : float
        Wall-clock time of the redis-benchmark process.
    server_cpu_s : float
        CPU time of redis-server (user and system) during the test.
    server_wait_s : float
        Time redis-server was ready to run but waited for a CPU.
    client_cpu_s : float
        CPU time of the redis-benchmark process (user and system).
    """

    operation: str
    requests: int
    rps: float
    wall_s: float
    server_cpu_s: float
    server_wait_s: float
    client_cpu_s: float


def schedstat(pid: int) -> tuple[float, float]:
    """Return a process's time on a CPU and its time waiting on a run queue
    so far, in seconds, over all its threads.

    The two are the first fields of each thread's /proc schedstat, counted
    in nanoseconds. utime and stime of /proc/PID/stat count 10 ms clock
    ticks, which is too coarse for a test of a second or two.
    """
    run_ns = wait_ns = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "schedstat").read_text().split()
        except OSError:
            continue  # a thread that exited since the listing
        run_ns += int(fields[0])
        wait_ns += int(fields[1])
    return run_ns / 1e9, wait_ns / 1e9


def parse_benchmark_csv(text: str) -> dict[str, float]:
    """Parse redis-benchmark ``--csv`` output into requests/s per test.

    Parameters
    ----------
    text : str
        Standard output of ``redis-benchmark --csv`` (redis 7: a header row
        ``"test","rps",...`` then one row per test).

    Returns
    -------
    dict
        Lower-case test name (``set``, ``lpush``...) -> requests per second.

    Raises
    ------
    BenchmarkError
        No header with ``test`` and ``rps`` columns, a rate that is not a
        number, or no test row.
    """
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or not {"test", "rps"} <= set(reader.fieldnames):
        raise BenchmarkError(
            f"redis-benchmark output has no 'test' and 'rps' columns: {text[:200]!r}"
        )
    rates = {}
    for row in reader:
        try:
            rates[row["test"].lower()] = float(row["rps"])
        except (TypeError, ValueError):
            raise BenchmarkError(
                f"redis-benchmark row {row} has an invalid rps value"
            ) from None
    if not rates:
        raise BenchmarkError(f"redis-benchmark output has no test row: {text[:200]!r}")
    return rates


class RedisServer:
    """redis-server in a temporary directory, on a unix socket only.

    Parameters
    ----------
    workdir : path-like or None
        Directory for the socket, the configuration and the log file;
        default: a new temporary directory, removed by :meth:`stop`.
    """

    def __init__(self, workdir: str | os.PathLike | None = None):
        self._own_dir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="syslrn-redis-"))
        self.socket = self.workdir / "redis.sock"
        self.logfile = self.workdir / "redis.log"
        self.proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise BenchmarkError("redis-server is not running")
        return self.proc.pid

    @property
    def trigger(self) -> str:
        return f"unix:{self.socket}"

    def start(self) -> RedisServer:
        """Start redis-server and wait until it replies to PING on its socket."""
        for tool in ("redis-server", "redis-cli", "redis-benchmark"):
            if shutil.which(tool) is None:
                raise BenchmarkError(
                    f"{tool} not found; install redis-server and redis-tools "
                    "(scripts/setup --servers)"
                )
        config = self.workdir / "redis.conf"
        config.write_text(
            "port 0\n"
            f"unixsocket {self.socket}\n"
            "unixsocketperm 700\n"
            'save ""\n'
            "appendonly no\n"
            "daemonize no\n"
            f"dir {self.workdir}\n"
            f"logfile {self.logfile}\n"
            "loglevel notice\n"
        )
        self.proc = subprocess.Popen(
            ["redis-server", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._answers_ping():
            if self.proc.poll() is not None:
                raise BenchmarkError(
                    f"redis-server exited with status {self.proc.returncode}; "
                    f"see {self.logfile}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise BenchmarkError(
                    f"redis-server did not reply to PING on {self.socket} within "
                    f"{START_TIMEOUT_S:.0f} s"
                )
            time.sleep(0.05)
        log.info("redis-server pid %d on %s", self.proc.pid, self.socket)
        return self

    def _answers_ping(self) -> bool:
        if not self.socket.exists():
            return False
        try:
            return self.cli("PING") == "PONG"
        except BenchmarkError:
            return False

    def cli(self, *args: str) -> str:
        """Run one redis-cli command on the socket; return its reply."""
        done = subprocess.run(
            ["redis-cli", "-s", str(self.socket), *args],
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT_S,
        )
        reply = done.stdout.strip()
        if done.returncode != 0 or reply.startswith("ERR"):
            raise BenchmarkError(
                f"redis-cli {' '.join(args)} failed: {reply or done.stderr.strip()}"
            )
        return reply

    def set_loglevel(self, level: str) -> None:
        self.cli("CONFIG", "SET", "loglevel", level)

    def schedstat(self) -> tuple[float, float]:
        """Return redis-server's :func:`schedstat`."""
        return schedstat(self.pid)

    def benchmark(
        self, operation: str, requests: int, clients: int = 50
    ) -> BenchmarkResult:
        """Run one redis-benchmark test with keep-alive off (a connection per
        request)."""
        if operation not in OPERATIONS:
            raise BenchmarkError(
                f"operation {operation!r} is not measured; choose one of "
                f"{', '.join(OPERATIONS)}"
            )
        command = [
            "redis-benchmark",
            "-s", str(self.socket),
            "-c", str(clients),
            "-k", "0",
            "-n", str(requests),
            "-t", operation,
            "--csv",
        ]  # fmt: skip
        run_before, wait_before = self.schedstat()
        start = time.monotonic()
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            client = subprocess.Popen(command, stdout=out, stderr=err)
            # os.wait4 reaps the client and returns its resource usage, which
            # holds its CPU time; Popen is given the status so it does not wait.
            _, status, usage = os.wait4(client.pid, 0)
            client.returncode = os.waitstatus_to_exitcode(status)
            wall = time.monotonic() - start
            run_after, wait_after = self.schedstat()
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read(), err.read()
        if client.returncode != 0:
            raise BenchmarkError(
                f"redis-benchmark -t {operation} exited with status "
                f"{client.returncode}: {stderr.strip()[-300:]}"
            )
        rates = parse_benchmark_csv(stdout)
        if operation not in rates:
            raise BenchmarkError(
                f"redis-benchmark -t {operation} reported only {sorted(rates)}"
            )
        return BenchmarkResult(
            operation=operation,
            requests=requests,
            rps=rates[operation],
            wall_s=wall,
            server_cpu_s=run_after - run_before,
            server_wait_s=wait_after - wait_before,
            client_cpu_s=usage.ru_utime + usage.ru_stime,
        )

    def stop(self) -> None:
        """Stop redis-server by its PID and remove a temporary directory."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                log.warning("redis-server pid %d ignored SIGTERM; killing it", self.pid)
                self.proc.kill()
                self.proc.wait()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
