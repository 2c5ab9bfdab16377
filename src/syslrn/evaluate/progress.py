"""A plain-text progress bar for campaigns: counts, elapsed and remaining time."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def format_duration(seconds: float) -> str:
    """Return ``seconds`` as H:MM:SS, or M:SS under an hour."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{minutes}:{secs:02d}"


class ProgressBar:
    """One status line on a terminal, or one line per step elsewhere.

    The remaining time is an estimate: the mean duration of the steps that
    this process finished, times the steps left. Steps finished by an
    earlier, interrupted run count as done but not in the mean.

    Parameters
    ----------
    total : int
        Number of steps in the whole campaign.
    done : int
        Steps already finished before this run.
    stream : text stream
        Where to draw; standard error by default.
    width : int
        Characters of the bar itself.
    """

    def __init__(
        self, total: int, done: int = 0, stream: TextIO | None = None, width: int = 24
    ):
        self.total = total
        self.done = done
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.failures = 0
        self.errors = 0
        self._finished_here = 0
        self._started = time.monotonic()
        self._current = ""
        self._interactive = bool(getattr(self.stream, "isatty", lambda: False)())

    def start(self, step: str) -> None:
        """Show that ``step`` (a short description) is running."""
        self._current = step
        if self._interactive:
            self._draw()

    def finish(self, *, failure: bool = False, error: bool = False) -> None:
        """Count the running step as done, as a failure run or an error."""
        self.done += 1
        self._finished_here += 1
        self.failures += int(failure)
        self.errors += int(error)
        self._draw()

    def close(self) -> None:
        """End the status line."""
        if self._interactive:
            self.stream.write("\n")
            self.stream.flush()

    def line(self) -> str:
        """Return the status line as it would be drawn now."""
        filled = self.width * self.done // self.total if self.total else self.width
        bar = "#" * filled + "." * (self.width - filled)
        elapsed = time.monotonic() - self._started
        if self._finished_here:
            left = elapsed / self._finished_here * (self.total - self.done)
            eta = f"left ~{format_duration(left)}"
        else:
            eta = "left ?"
        return (
            f"[{bar}] {self.done}/{self.total}  failures {self.failures}  "
            f"errors {self.errors}  elapsed {format_duration(elapsed)}  {eta}  "
            f"{self._current}"
        )

    def _draw(self) -> None:
        if self._interactive:
            # Carriage return and erase-line redraw the status in place.
            self.stream.write("\r\x1b[K" + self.line())
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()
