"""The online monitor: load the plan's probes, close windows, judge them.

User space wakes every ``poll_s`` to read the window state map; all
per-event work happens in the kernel. A window is judged once it has
closed, that is once the quiet time has passed after its last request.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from syslrn.collect.clock import boottime_ns
from syslrn.collect.trigger import TRIGGER_UNIX, Trigger, is_listening
from syslrn.errors import SyslrnError
from syslrn.monitor.kernel import MonitorProbes, WindowFeatures
from syslrn.monitor.plan import MonitorPlan, make_plan
from syslrn.text import format_count

log = logging.getLogger(__name__)

#: A window closes after this many seconds without a request, unless the
#: model's training runs call for a longer one.
MIN_QUIET_S = 1.0
#: The quiet time is this multiple of the longest gap between two requests
#: of one training run, so that no training-like run is split in two.
QUIET_GAP_FACTOR = 2.0


def quiet_time(training: dict[str, Any]) -> float:
    """Return the window's quiet time for a model's training facts."""
    gap = training.get("quiet_gap_s")
    if gap is None:
        return MIN_QUIET_S
    return max(MIN_QUIET_S, QUIET_GAP_FACTOR * float(gap))


@dataclass
class Verdict:
    """The judgement of one closed window."""

    window: WindowFeatures
    detection: Any

    @property
    def anomalous(self) -> bool:
        return self.detection.anomalous

    def to_dict(self) -> dict[str, Any]:
        return {
            "window": self.window.epoch,
            "open_ns": self.window.open_ns,
            "close_ns": self.window.close_ns,
            "requests": self.window.requests,
            "features": self.window.values,
            **self.detection.to_dict(),
        }

    def human(self) -> str:
        requests = format_count(self.window.requests, "request")
        head = f"window {self.window.epoch} ({requests})"
        if not self.anomalous:
            return f"{head}: normal"
        parts = [
            f"{c.feature} observed {c.observed:g}, expected {c.expected:.1f} "
            f"+/- {c.tolerance:.1f}"
            for c in self.detection.deviating()
        ]
        return f"{head}: ANOMALY: " + "; ".join(parts)


#: Why a unix trigger may not match a socket that listens: the kernel keeps
#: the name that bind() was given, which may be relative.
_UNIX_NAME_HINT = (
    "; a unix trigger must be the name the service bound, as /proc/net/unix "
    "shows it, which is relative if the service bound a relative path"
)

#: The maximum and the minimum default poll interval, in seconds.
MAX_POLL_S = 0.2
MIN_POLL_S = 0.01


def poll_interval(quiet_s: float) -> float:
    """Return the default poll interval for windows closed by ``quiet_s``.

    A window lasts at least the quiet time, and the kernel keeps two, so a
    poll at least once per quiet time reads every window before it is
    overwritten. Half the quiet time leaves room for a late wake-up.
    """
    return min(MAX_POLL_S, max(MIN_POLL_S, quiet_s / 2))


class Monitor:
    """Watch a service with the probes a model needs.

    Parameters
    ----------
    model : syslrn.model.file.Model
    trigger : Trigger
    quiet_s : float or None
        Quiet time that closes a window; default from the model's training.
    poll_s : float or None
        How often user space reads the window state; default
        :func:`poll_interval` of the quiet time.
    on_verdict : callable
        Called with each :class:`Verdict`.
    """

    def __init__(
        self,
        model,
        trigger: Trigger,
        quiet_s: float | None = None,
        poll_s: float | None = None,
        on_verdict: Callable[[Verdict], None] | None = None,
    ):
        self.model = model
        self.trigger = trigger
        self.plan: MonitorPlan = make_plan(model.to_dict())
        self.quiet_s = quiet_s if quiet_s is not None else quiet_time(model.training)
        self.poll_s = poll_s if poll_s is not None else poll_interval(self.quiet_s)
        self.on_verdict = on_verdict or (lambda verdict: None)
        try:
            self.probes = MonitorProbes(self.plan, trigger, self.quiet_s)
        except SyslrnError as exc:
            if quiet_s is not None:
                raise
            raise SyslrnError(
                f"{exc}; the model's training.quiet_gap_s gives it, so pass "
                "--quiet SECONDS or train the model again"
            ) from None
        if self.quiet_s < 2 * MIN_POLL_S:
            log.warning(
                "quiet time %g s is under %g s, twice the shortest poll interval: "
                "windows may close and be overwritten before a poll reads them",
                self.quiet_s,
                2 * MIN_POLL_S,
            )
        self.verdicts: list[Verdict] = []
        self._judged = 0
        #: Windows that closed and were overwritten before a poll read them.
        self.lost = 0
        #: Requests counted at the trigger, lost windows' included, as of
        #: the last poll. on_verdict reads it, because a fresh read of the
        #: state in the middle of a poll would change the snapshot that the
        #: poll's next window is read from.
        self.total_requests = 0
        self.started = threading.Event()

    def wait_for_trigger(
        self, timeout: float | None, stop: threading.Event | None = None
    ) -> bool:
        """Wait until the trigger socket listens, or fail at once if timeout
        is None.

        Return False if ``stop`` was set before the socket listened.
        """
        if is_listening(self.trigger):
            return True
        hint = _UNIX_NAME_HINT if self.trigger.kind == TRIGGER_UNIX else ""
        if timeout is None:
            raise SyslrnError(
                f"trigger {self.trigger}: nothing listens there; start the "
                f"service first, or pass --wait-for-trigger SECONDS{hint}"
            )
        log.warning(
            "trigger %s: nothing listens yet; waiting up to %g s",
            self.trigger,
            timeout,
        )
        stop = stop or threading.Event()
        deadline = time.monotonic() + timeout
        while not is_listening(self.trigger):
            if time.monotonic() > deadline:
                raise SyslrnError(
                    f"trigger {self.trigger}: nothing listened within {timeout:g} s{hint}"
                )
            if stop.wait(0.2):
                log.info("stopped while waiting for trigger %s", self.trigger)
                return False
        return True

    def run(self, stop: threading.Event) -> list[Verdict]:
        """Monitor until ``stop`` is set; judge every window that closed."""
        if stop.is_set():
            log.info("stopped before loading the programs")
            return self.verdicts
        self.probes.load()
        log.info(
            "monitoring %s: %s, quiet time %.2f s, programs %s",
            self.trigger,
            format_count(len(self.plan.features), "feature"),
            self.quiet_s,
            ", ".join(self.plan.programs),
        )
        self.started.set()
        try:
            while not stop.wait(self.poll_s):
                self.poll()
            self.poll()
            self._report_open_window()
        finally:
            self.probes.close()
            log.info(
                "monitor stopped after %s judged, %d lost",
                format_count(len(self.verdicts), "window"),
                self.lost,
            )
        return self.verdicts

    def poll(self) -> None:
        """Judge the windows that closed since the last poll."""
        # The clock first: a request between the two reads then shows in the
        # state as later than now, and its window as open.
        now = boottime_ns()
        state = self.probes.state()
        self.total_requests = state.total_requests
        closed = state.epoch
        if state.epoch and now - state.current.last_request_ns <= self.probes.quiet_ns:
            closed -= 1
        # The kernel keeps the current window and the one before it, open
        # or not, so unjudged windows older than those are lost.
        oldest = state.epoch - 1
        if self._judged + 1 < oldest:
            lost = oldest - 1 - self._judged
            log.warning(
                "%s closed unread and %s lost (%d..%d): the monitor did not "
                "poll within two windows",
                format_count(lost, "window"),
                "is" if lost == 1 else "are",
                self._judged + 1,
                oldest - 1,
            )
            self.lost += lost
            self._judged = oldest - 1
        while self._judged < closed:
            epoch = self._judged + 1
            meta = state.current if epoch == state.epoch else state.previous
            self._judge(self.probes.window(epoch, meta))
            self._judged = epoch

    def _report_open_window(self) -> None:
        """Log the window still open at stop: it is not judged, because its
        quiet time has not passed and it may be short of requests."""
        state = self.probes.state()
        if state.epoch > self._judged:
            log.warning(
                "window %d was still open at stop (%s so far) and is not judged",
                state.epoch,
                format_count(state.current.requests, "request"),
            )

    def _judge(self, window: WindowFeatures) -> None:
        detection = self.model.detect(window.values, window.requests)
        verdict = Verdict(window=window, detection=detection)
        self.verdicts.append(verdict)
        errors = self.probes.errors()
        if any(errors.values()):
            log.warning(
                "the monitor's kernel programs missed events (%s); counts may be low",
                ", ".join(f"{name} {n}" for name, n in errors.items() if n),
            )
        log.info(
            "window %d closed: %s, %s",
            window.epoch,
            format_count(window.requests, "request"),
            "anomalous" if verdict.anomalous else "normal",
        )
        self.on_verdict(verdict)
