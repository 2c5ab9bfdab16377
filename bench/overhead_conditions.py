"""The conditions of the overhead benchmark: what runs beside redis-server.

A condition is set up before a round's four redis-benchmark tests and torn
down after them; set-up and tear-down are not timed. :meth:`Condition.stop`
returns what the condition saw, so that a run which observed nothing (a
probe that did not attach, a trigger that did not match) shows in the
results instead of passing for a cheap one.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from bpfstats import tracepoint_attachments
from redisbench import BenchmarkError, RedisServer

log = logging.getLogger(__name__)

ATTACH_TIMEOUT_S = 60.0


class Condition:
    """No monitoring at all: the baseline."""

    name = "baseline"
    label = "baseline"

    def start(self, server: RedisServer, workdir: Path) -> None:
        self.server = server
        self.workdir = workdir

    def stop(self) -> dict[str, Any]:
        return {}

    def bpf_owner(self) -> int | None:
        """Return the pid of the process whose file descriptors keep this
        condition's BPF programs loaded, if any."""
        return None

    def tool_pids(self) -> list[int]:
        """Return the processes this condition runs, other than this one,
        whose CPU time is the monitoring tool's."""
        return []


class Repeat(Condition):
    """The baseline measured a second time in the round: the noise floor."""

    name = "repeat"
    label = "baseline again"


class RequestLogging(Condition):
    """redis-server at ``loglevel verbose``, which logs every connection's
    accept and close to the log file."""

    name = "logging"
    label = "request logging"

    def start(self, server: RedisServer, workdir: Path) -> None:
        super().start(server, workdir)
        self._size_before = self._log_size()
        server.set_loglevel("verbose")

    def _log_size(self) -> int:
        try:
            return self.server.logfile.stat().st_size
        except FileNotFoundError:
            return 0

    def stop(self) -> dict[str, Any]:
        self.server.set_loglevel("notice")
        written = self._log_size() - self._size_before
        # redis 7.0 opens the log file for each line it writes, so emptying
        # the file here bounds its size over the rounds and is seen at once.
        os.truncate(self.server.logfile, 0)
        return {"log_bytes": written}


class TailoredMonitor(Condition):
    """The syslrn monitor with the probes a model needs, in a thread of this
    process, as ``syslrn monitor`` runs it.

    Parameters
    ----------
    model_path : path-like
        Model file written by ``syslrn train``.
    """

    name = "monitor"
    label = "syslrn monitor"

    def __init__(self, model_path: str | os.PathLike):
        from syslrn.model import load_model

        self.model = load_model(model_path)

    def start(self, server: RedisServer, workdir: Path) -> None:
        from syslrn.collect.trigger import parse_trigger
        from syslrn.monitor.online import Monitor

        super().start(server, workdir)
        self.monitor = Monitor(self.model, parse_trigger(server.trigger))
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, name="syslrn-monitor", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + ATTACH_TIMEOUT_S
        while not self.monitor.started.wait(0.1):
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self._stop.set()
                self._thread.join()
                raise BenchmarkError(f"the monitor did not start: {self._error!r}")

    def _run(self) -> None:
        try:
            self.monitor.run(self._stop)
        except BaseException as exc:  # re-raised by stop() or start()
            log.exception("monitor thread failed")
            self._error = exc

    def bpf_owner(self) -> int | None:
        return os.getpid()

    def stop(self) -> dict[str, Any]:
        # The last window closes once the quiet time has passed after the
        # last request; waiting for it lets the monitor judge that window.
        time.sleep(self.monitor.quiet_s + 2 * self.monitor.poll_s)
        self._stop.set()
        self._thread.join()
        if self._error is not None:
            raise self._error
        verdicts = self.monitor.verdicts
        return {
            "programs": list(self.monitor.plan.programs),
            "features": list(self.monitor.plan.features),
            "windows": len(verdicts),
            "anomalous_windows": sum(1 for v in verdicts if v.anomalous),
            "requests": sum(v.window.requests for v in verdicts),
        }


class FullRecorder(Condition):
    """The syslrn recorder, writing every process and connection event of the
    host to a trace, in a thread of this process as ``syslrn record`` runs it.
    The trace is removed after the run."""

    name = "recorder"
    label = "syslrn recorder"

    def start(self, server: RedisServer, workdir: Path) -> None:
        from syslrn.collect.recorder import Recorder

        super().start(server, workdir)
        self.trace = workdir / "recorder.parquet"
        self.recorder = Recorder(
            self.trace, trigger=server.trigger, labels={"phase": "benchmark"}
        )
        self.recorder.start()

    def bpf_owner(self) -> int | None:
        return os.getpid()

    def stop(self) -> dict[str, Any]:
        meta = self.recorder.stop()
        size = self.trace.stat().st_size
        self.trace.unlink()
        return {
            "events": meta["events"],
            "lost_events": meta["lost_events"],
            "requests": meta["requests"],
            "trace_bytes": size,
        }


class Bpftrace(Condition):
    """A bpftrace one-liner that prints one line per connection redis-server
    accepts to a file: the per-event output a general tracer gives.

    redis accepts until accept4 fails with EAGAIN, so the filter leaves the
    failed calls out of the output; the program still runs on them.
    """

    name = "bpftrace"
    label = "bpftrace printf"
    PROGRAM = (
        "tracepoint:syscalls:sys_exit_accept4 /pid == {pid} && args->ret >= 0/ "
        '{{ printf("%llu %d %s %d\\n", nsecs, pid, comm, args->ret); }}'
    )

    @staticmethod
    def available() -> str | None:
        """Return why bpftrace cannot run here, or None."""
        if shutil.which("bpftrace") is None:
            return "bpftrace not found; install it (scripts/setup --servers)"
        return None

    def start(self, server: RedisServer, workdir: Path) -> None:
        super().start(server, workdir)
        self.output = workdir / "bpftrace.out"
        self.stderr_path = workdir / "bpftrace.err"
        program = self.PROGRAM.format(pid=server.pid)
        with open(self.stderr_path, "w") as stderr:
            self.proc = subprocess.Popen(
                ["bpftrace", "-o", str(self.output), "-e", program],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        self._wait_attached()

    def _wait_attached(self) -> None:
        """Wait until bpftrace's program is attached to the tracepoint.

        bpftrace prints "Attaching N probes..." before it attaches, and it
        buffers the lines it writes to a file, so the output shows neither
        moment. ``bpftool perf show`` lists the attachment itself.
        """
        deadline = time.monotonic() + ATTACH_TIMEOUT_S
        while not self._attached():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self._terminate()
                raise BenchmarkError(
                    f"bpftrace did not attach: {self.stderr_path.read_text()[-500:]}"
                )
            time.sleep(0.1)

    def _attached(self) -> bool:
        return any(
            entry["pid"] == self.proc.pid and entry["tracepoint"] == "sys_exit_accept4"
            for entry in tracepoint_attachments()
        )

    def _accept_lines(self) -> int:
        try:
            with open(self.output, "rb") as output:
                lines = output.read().count(b"\n")
        except FileNotFoundError:
            return 0
        return max(lines - 1, 0)  # less the "Attaching" header

    def bpf_owner(self) -> int | None:
        return self.proc.pid

    def tool_pids(self) -> list[int]:
        return [self.proc.pid]

    def _terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                log.warning("bpftrace pid %d ignored SIGINT; killing it", self.proc.pid)
                self.proc.kill()
                self.proc.wait()

    def stop(self) -> dict[str, Any]:
        self._terminate()
        lines = self._accept_lines()
        size = self.output.stat().st_size
        self.output.unlink()
        return {"accept_lines": lines, "output_bytes": size}


CONDITIONS = {
    cls.name: cls
    for cls in (Condition, RequestLogging, TailoredMonitor, FullRecorder, Bpftrace)
}
CONDITIONS[Repeat.name] = Repeat
