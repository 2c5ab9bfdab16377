"""Stopping long-running commands on SIGINT and SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading

from syslrn.commands._signals import StopOnSignals

# Logs to stderr as fast as it can, and logs the signal too, as syslrn
# monitor does.
BUSY_LOGGER = textwrap.dedent(
    """
    import logging, sys, threading
    from syslrn.commands._signals import StopOnSignals

    logging.basicConfig(stream=sys.stderr, level=logging.INFO)
    log = logging.getLogger("busy")
    stop = threading.Event()
    with StopOnSignals(stop, lambda signum: log.info("received %d", signum)) as s:
        print("ready", flush=True)
        while not stop.is_set():
            log.info("busy")
    print(s.received, flush=True)
    """
)


def test_stop_on_signals_sets_event():
    stop = threading.Event()
    seen = []
    before = signal.getsignal(signal.SIGTERM)

    with StopOnSignals(stop, seen.append) as signals:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(10)

    assert signals.received == [signal.SIGTERM]
    assert seen == [signal.SIGTERM]
    assert signal.getsignal(signal.SIGTERM) is before
    assert signal.set_wakeup_fd(-1) == -1


def test_stop_on_signals_ignores_other_signals():
    stop = threading.Event()
    previous = signal.signal(signal.SIGUSR1, lambda _signum, _frame: None)
    try:
        with StopOnSignals(stop) as signals:
            # SIGUSR1 has a Python handler, so it reaches the wakeup socket.
            os.kill(os.getpid(), signal.SIGUSR1)
            os.kill(os.getpid(), signal.SIGINT)
            assert stop.wait(10)
    finally:
        signal.signal(signal.SIGUSR1, previous)

    assert signals.received == [signal.SIGINT]


def test_sigterm_stops_busy_logger():
    # A signal handler that logged could run inside the main thread's own
    # write to stderr. The log then failed as a reentrant call before the
    # stop was set, so the process never stopped. With Debian 12's Python
    # 3.11.2, 6 of 20 such children hung, with stderr read by another
    # thread as a supervisor reads it.
    for attempt in range(20):
        child = subprocess.Popen(
            [sys.executable, "-c", BUSY_LOGGER],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        drain = threading.Thread(target=child.stderr.read, daemon=True)
        drain.start()
        try:
            assert child.stdout.readline() == "ready\n"
            child.send_signal(signal.SIGTERM)
            returncode = child.wait(30)
            output = child.stdout.read()
        finally:
            child.kill()
            child.wait()
            drain.join(10)
            child.stdout.close()
            child.stderr.close()

        assert returncode == 0, f"attempt {attempt}"
        assert output == f"[{int(signal.SIGTERM)}]\n", f"attempt {attempt}"
