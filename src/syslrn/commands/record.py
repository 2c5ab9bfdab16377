"""``syslrn record``: record the host's process and connection events."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

from syslrn.collect.recorder import DEFAULT_RINGBUF_BYTES, Recorder
from syslrn.collect.trigger import is_listening, parse_trigger
from syslrn.commands._argtypes import positive_seconds, trigger_text
from syslrn.commands._signals import StopOnSignals
from syslrn.errors import SyslrnError
from syslrn.text import format_count
from syslrn.trace.io import check_new_output

log = logging.getLogger(__name__)

# How long a command gets to exit after SIGTERM when the recording is
# stopped by a signal, before it is killed.
COMMAND_GRACE_S = 5.0


def parse_label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"invalid label {text!r}: expected key=value")
    if key == "requests" and not (value.isdigit() and len(value) < 19):
        raise argparse.ArgumentTypeError(
            f"invalid label {text!r}: requests must be a non-negative integer"
        )
    return key, value


def _ringbuf_mib(text: str) -> int:
    if not text.isdigit() or int(text) < 1 or int(text) & (int(text) - 1):
        raise argparse.ArgumentTypeError(
            f"invalid ring buffer size {text!r}: give a power of two of MiB, e.g. 64"
        )
    return int(text)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "record",
        help="record process and connection events into a trace",
        description=(
            "Record every process fork, exec and exit and every TCP and unix "
            "stream connect and accept on this host. With COMMAND, record while "
            "it runs; its process tree is tagged as the workload driver."
        ),
    )
    parser.add_argument(
        "-o", "--output", required=True, help="trace file to write (.parquet)"
    )
    parser.add_argument(
        "--duration",
        type=positive_seconds,
        metavar="SECONDS",
        help=(
            "stop after this many seconds; with COMMAND, whichever ends first, "
            "and a command still running then gets SIGTERM"
        ),
    )
    parser.add_argument(
        "--trigger",
        type=trigger_text,
        metavar="tcp:PORT|unix:PATH",
        help="count connections accepted on this listening socket as requests",
    )
    parser.add_argument(
        "--label",
        action="append",
        type=parse_label,
        default=[],
        metavar="KEY=VALUE",
        help="store a run label, e.g. requests=3 or phase=idle (repeatable)",
    )
    parser.add_argument(
        "--host", help="host name stored in the trace (default: hostname)"
    )
    parser.add_argument(
        "--ringbuf-size",
        type=_ringbuf_mib,
        default=DEFAULT_RINGBUF_BYTES >> 20,
        metavar="MIB",
        help="ring buffer size in MiB, a power of two (default: %(default)s)",
    )
    parser.add_argument(
        "--force", action="store_true", help="overwrite the output file if it exists"
    )
    parser.add_argument(
        "command",
        nargs=argparse.REMAINDER,
        metavar="-- COMMAND ...",
        help="the command to run while recording, and its arguments",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # The line that names the signal or deadline that ended a recording
    # shows without -v.
    if args.verbose == 0:
        log.setLevel(logging.INFO)
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command and args.duration is None:
        log.info("no COMMAND and no --duration: recording until SIGINT or SIGTERM")
    if command and shutil.which(command[0]) is None:
        raise SyslrnError(
            f"command {command[0]!r} not found or not executable; nothing was recorded"
        )
    check_new_output(args.output, overwrite=args.force)
    if args.trigger and not is_listening(parse_trigger(args.trigger)):
        log.warning(
            "trigger %s: nothing listens there now, so no request will be counted "
            "unless a server starts listening during the recording",
            args.trigger,
        )

    recorder = Recorder(
        args.output,
        trigger=args.trigger,
        labels=dict(args.label),
        host=args.host,
        ringbuf_bytes=args.ringbuf_size << 20,
    )
    stop = threading.Event()
    with StopOnSignals(stop) as signals:
        return _record(recorder, command, args.duration, stop, signals.received)


def _record(recorder, command, duration, stop, received) -> int:
    recorder.start()
    status = 0
    proc = None
    timed_out = False
    terminal = None
    try:
        if command:
            recorder.extra_meta["command"] = command
            try:
                # Its own process group, so that stopping the recording
                # stops the whole tree the command started.
                proc = subprocess.Popen(command, process_group=0)
            except OSError as exc:
                raise SyslrnError(f"cannot run {command[0]}: {exc.strerror}") from None
            recorder.extra_meta["command_pid"] = proc.pid
            terminal = _hand_terminal(proc.pid)
        deadline = None if duration is None else time.monotonic() + duration
        while not stop.is_set():
            if proc is not None and proc.poll() is not None:
                break
            if deadline is not None and time.monotonic() >= deadline:
                timed_out = True
                break
            stop.wait(0.05)
        if proc is not None:
            # At the deadline, the command is stopped as at a signal, and
            # the recording has ended as requested, so the exit status is 0.
            # The trace keeps the command's own status.
            status = _finish_command(proc, stopped=stop.is_set() or timed_out)
            recorder.extra_meta["command_status"] = proc.returncode
            if timed_out:
                status = 0
    finally:
        if terminal is not None:
            _take_terminal(terminal)
        meta = recorder.stop()
    if received:
        log.info("stopped by %s", signal.Signals(received[0]).name)
    elif timed_out and proc is not None:
        log.info("stopped command pid %d at the end of --duration", proc.pid)
    _report(meta, recorder.output)
    return status


def _hand_terminal(pgid: int) -> int | None:
    """Make process group ``pgid`` the foreground group of syslrn's
    terminal, if syslrn's own group has it; return the terminal's fd.

    The command runs in a process group of its own, and the kernel stops a
    background group that reads its terminal (SIGTTIN). An interactive
    command would wait forever, and the recording with it.
    """
    try:
        fd = sys.stdin.fileno()
        if not os.isatty(fd) or os.tcgetpgrp(fd) != os.getpgrp():
            return None
        os.tcsetpgrp(fd, pgid)
    except (OSError, ValueError):
        return None
    # The command may have read the terminal, and been stopped, before
    # its group had it.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGCONT)
    return fd


def _take_terminal(fd: int) -> None:
    """Give the terminal back to syslrn's process group."""
    # A background group that sets the foreground group gets SIGTTOU,
    # which would stop syslrn.
    previous = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    try:
        os.tcsetpgrp(fd, os.getpgrp())
    except OSError as exc:
        log.warning("cannot take the terminal back from the command: %s", exc)
    finally:
        signal.signal(signal.SIGTTOU, previous)


def _finish_command(proc: subprocess.Popen, stopped: bool) -> int:
    if proc.poll() is None:
        if stopped:
            _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=COMMAND_GRACE_S if stopped else None)
        except subprocess.TimeoutExpired:
            log.warning("command pid %d ignored SIGTERM; killing it", proc.pid)
            _signal_group(proc, signal.SIGKILL)
            proc.wait()
    elif stopped:
        # The command is gone; its children may not be.
        _signal_group(proc, signal.SIGTERM)
    code = proc.returncode
    return 128 - code if code < 0 else code


def _signal_group(proc: subprocess.Popen, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def _report(meta: dict, path) -> None:
    lost = meta.get("lost_events", 0)
    requests = meta.get("requests")
    events = format_count(meta.get("events", 0), "event")
    parts = [f"recorded {events} in {meta.get('duration_s', 0):.2f} s"]
    if requests is not None:
        parts.append(format_count(requests, "request"))
    parts.append(f"{lost} lost")
    print(f"syslrn: {', '.join(parts)} -> {path}", file=sys.stderr)
    if lost:
        print(
            f"syslrn: warning: {format_count(lost, 'event')} "
            f"{'was' if lost == 1 else 'were'} lost because ring buffer "
            "reservations failed; the trace is incomplete. If the buffer was "
            "full, raise --ringbuf-size.",
            file=sys.stderr,
        )
