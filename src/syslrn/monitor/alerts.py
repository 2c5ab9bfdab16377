"""The online monitor's verdict output: JSON lines, and a line for people.

A JSON line is written with ``os.write`` on the file descriptor, not through
Python's buffer, so that a write that fails part-way can be undone. On a
regular file the writer truncates the file back to its last whole line, so
the file stays valid JSON lines when the disk fills.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
import sys
from typing import TextIO

from syslrn.errors import SyslrnError
from syslrn.monitor.online import Verdict

log = logging.getLogger(__name__)


class AlertWriter:
    """Write verdicts as JSON lines to ``path`` or stdout, and a human line
    per window to ``human``.

    Parameters
    ----------
    path : str or None
        File that JSON lines are appended to; None for stdout.
    all_windows : bool
        Write every window's verdict as JSON, not only anomalies.
    human : text stream
        Receives one line per window; default stderr.

    Raises
    ------
    SyslrnError
        The file cannot be opened. Later, an alert cannot be written, with
        exit status 1: the monitor must stop rather than lose alerts.
    """

    def __init__(
        self, path: str | None, all_windows: bool = False, human: TextIO | None = None
    ):
        self.all_windows = all_windows
        self.human = human if human is not None else sys.stderr
        self.target = f"--alerts {path}" if path else "stdout"
        self._owned = path is not None
        if path is None:
            sys.stdout.flush()
            self._fd = sys.stdout.fileno()
        else:
            try:
                self._fd = os.open(
                    path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666
                )
            except OSError as exc:
                raise SyslrnError(
                    f"cannot open --alerts {path}: {exc.strerror}; give a writable file"
                ) from None
        self._regular = stat.S_ISREG(os.fstat(self._fd).st_mode)
        if self._regular:
            self._end_last_line(path)

    def __call__(self, verdict: Verdict) -> None:
        # The human line first, so that the log shows the verdict of a
        # window whose JSON line then fails.
        self._write_human(verdict.human())
        if verdict.anomalous or self.all_windows:
            self._write_line(json.dumps(verdict.to_dict()) + "\n", verdict.window.epoch)

    def close(self) -> None:
        if self._owned and self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _end_last_line(self, path: str) -> None:
        """Start on a new line if the file ends inside one, which a crash
        or an older syslrn may have left. A file that cannot be read is
        left as it is."""
        size = os.fstat(self._fd).st_size
        if not size:
            return
        try:
            with open(path, "rb") as file:
                file.seek(size - 1)
                last = file.read(1)
        except OSError:
            return
        if last != b"\n":
            log.warning(
                "%s ends inside a line; the next alert starts on a new line",
                self.target,
            )
            self._write_line("\n", epoch=None)

    def _write_line(self, line: str, epoch: int | None) -> None:
        data = line.encode()
        # With O_APPEND every write goes to the end, so the end now is
        # where the file stops being whole lines if the write fails.
        start = os.lseek(self._fd, 0, os.SEEK_END) if self._regular else None
        try:
            while data:
                written = os.write(self._fd, data)
                data = data[written:]
        except OSError as exc:
            if start is not None:
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, start)
            raise self._write_error(exc, epoch) from None

    def _write_error(self, exc: OSError, epoch: int | None) -> SyslrnError:
        alert = "an alert" if epoch is None else f"window {epoch}'s alert"
        if isinstance(exc, BrokenPipeError):
            message = (
                f"cannot write {alert}: the reader of {self.target} closed it; the "
                "monitor stopped, so keep the reader running or pass --alerts FILE"
            )
        else:
            message = (
                f"cannot write {alert} to {self.target}: {exc.strerror}; the monitor "
                "stopped, so make room or give another --alerts FILE"
            )
        return SyslrnError(message, exit_code=1)

    def _write_human(self, line: str) -> None:
        """Write the line for people. If its stream has gone, stop writing
        there and keep monitoring, since the JSON lines carry the alerts."""
        if self.human is None:
            return
        try:
            print(line, file=self.human, flush=True)
        except OSError:
            failed, self.human = self.human, None
            # The logs went there too. Python would fail again when it
            # flushes stderr at exit, so stderr goes to /dev/null instead.
            if failed is sys.stderr:
                with contextlib.suppress(OSError, ValueError):
                    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stderr.fileno())
