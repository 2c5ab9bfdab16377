"""The clock that trace timestamps and monitor windows use."""

from __future__ import annotations

import time


def boottime_ns() -> int:
    """Return CLOCK_BOOTTIME in nanoseconds, the clock of bpf_ktime_get_boot_ns."""
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME)
