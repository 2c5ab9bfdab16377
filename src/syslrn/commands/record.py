"""``syslrn record``: record the host's process and connection events."""

from __future__ import annotations

import argparse
import logging
import signal
import subprocess
import sys
import threading
import time

from syslrn.collect.recorder import DEFAULT_RINGBUF_BYTES, Recorder
from syslrn.collect.trigger import parse_trigger
from syslrn.errors import SyslrnError

log = logging.getLogger(__name__)

# How long a command gets to exit after SIGTERM when the recording is
# stopped by a signal, before it is killed.
COMMAND_GRACE_S = 5.0


def parse_label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"invalid label {text!r}: expected key=value")
    return key, value


def _trigger(text: str) -> str:
    try:
        parse_trigger(text)
    except SyslrnError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


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
        type=float,
        metavar="SECONDS",
        help="stop after this many seconds (with COMMAND: whichever ends first)",
    )
    parser.add_argument(
        "--trigger",
        type=_trigger,
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
        type=int,
        default=DEFAULT_RINGBUF_BYTES >> 20,
        metavar="MIB",
        help="ring buffer size in MiB, a power of two (default: %(default)s)",
    )
    parser.add_argument(
        "command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command and args.duration is None:
        log.info("no COMMAND and no --duration: recording until SIGINT or SIGTERM")
    if args.duration is not None and args.duration <= 0:
        raise SyslrnError(f"invalid --duration {args.duration}: must be positive")

    recorder = Recorder(
        args.output,
        trigger=args.trigger,
        labels=dict(args.label),
        host=args.host,
        ringbuf_bytes=args.ringbuf_size << 20,
    )
    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum, _frame):
        received.append(signum)
        stop.set()

    previous = {
        sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        return _record(recorder, command, args.duration, stop, received)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _record(recorder, command, duration, stop, received) -> int:
    recorder.start()
    status = 0
    proc = None
    try:
        if command:
            recorder.extra_meta["command"] = command
            try:
                proc = subprocess.Popen(command)
            except OSError as exc:
                raise SyslrnError(f"cannot run {command[0]}: {exc.strerror}") from None
            recorder.extra_meta["command_pid"] = proc.pid
        deadline = None if duration is None else time.monotonic() + duration
        while not stop.is_set():
            if proc is not None and proc.poll() is not None:
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
            stop.wait(0.05)
        if proc is not None:
            status = _finish_command(proc, stopped=stop.is_set())
            recorder.extra_meta["command_status"] = proc.returncode
    finally:
        meta = recorder.stop()
    if received:
        log.info("stopped by %s", signal.Signals(received[0]).name)
    _report(meta, recorder.output)
    return status


def _finish_command(proc: subprocess.Popen, stopped: bool) -> int:
    if proc.poll() is None:
        if stopped:
            proc.terminate()
        try:
            proc.wait(timeout=COMMAND_GRACE_S if stopped else None)
        except subprocess.TimeoutExpired:
            log.warning("command pid %d ignored SIGTERM; killing it", proc.pid)
            proc.kill()
            proc.wait()
    code = proc.returncode
    return 128 - code if code < 0 else code


def _report(meta: dict, path) -> None:
    lost = meta.get("lost_events", 0)
    requests = meta.get("requests")
    parts = [
        f"recorded {meta.get('events', 0)} events in {meta.get('duration_s', 0):.2f} s"
    ]
    if requests is not None:
        parts.append(f"{requests} requests")
    parts.append(f"{lost} lost")
    print(f"syslrn: {', '.join(parts)} -> {path}", file=sys.stderr)
    if lost:
        print(
            f"syslrn: warning: {lost} events were lost because ring buffer "
            "reservations failed; the trace is incomplete. If the buffer was "
            "full, raise --ringbuf-size.",
            file=sys.stderr,
        )
