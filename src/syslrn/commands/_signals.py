"""Stop a long-running command on SIGINT or SIGTERM, safely.

A Python signal handler runs in the main thread between two bytecodes, so
it can interrupt that thread inside a write to stderr or while it holds a
``threading.Event``'s lock. A handler that logs then fails with a
reentrant call on the stream, and one that sets the event waits for a
lock that the thread it interrupted holds.

Here the handler does nothing: the interpreter's C handler writes each
signal's number to a wakeup socket (``signal.set_wakeup_fd``), and a
thread reads it, logs and sets the event.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
from collections.abc import Callable, Iterable

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _ignore(_signum, _frame) -> None:
    """Do nothing. The interpreter's C handler, which writes to the wakeup
    socket, is installed only for signals that have a Python handler."""


class StopOnSignals:
    """Set ``stop`` when one of ``signals`` arrives, inside a with-block.

    Parameters
    ----------
    stop : threading.Event
    on_signal : callable, optional
        Called with the signal number, from the reader thread, before
        ``stop`` is set.
    signals : iterable of signal.Signals
        Default SIGINT and SIGTERM.

    Attributes
    ----------
    received : list of int
        The signals that arrived, in order.
    """

    def __init__(
        self,
        stop: threading.Event,
        on_signal: Callable[[int], None] | None = None,
        signals: Iterable[signal.Signals] = STOP_SIGNALS,
    ):
        self.stop = stop
        self.on_signal = on_signal
        self.signals = frozenset(int(sig) for sig in signals)
        self.received: list[int] = []
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopOnSignals:
        self._reader, self._writer = socket.socketpair()
        # On a full socket, the C handler drops the byte instead of blocking.
        self._writer.setblocking(False)
        self._previous_fd = signal.set_wakeup_fd(
            self._writer.fileno(), warn_on_full_buffer=False
        )
        self._thread = threading.Thread(
            target=self._read, name="syslrn-signals", daemon=True
        )
        self._thread.start()
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, _ignore)
        return self

    def __exit__(self, *exc_info) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        signal.set_wakeup_fd(self._previous_fd)

        # The reader sees end of file once the writer is closed.
        self._writer.close()
        self._thread.join(5)
        self._reader.close()

    def _read(self) -> None:
        while True:
            try:
                data = self._reader.recv(64)
            except OSError as exc:
                log.error("cannot read the signal wakeup socket: %s", exc)
                return
            if not data:
                return
            # The socket also carries other signals that have a Python handler.
            for signum in data:
                if signum not in self.signals:
                    continue
                self.received.append(signum)
                if self.on_signal is not None:
                    self.on_signal(signum)
                self.stop.set()
