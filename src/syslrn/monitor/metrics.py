"""Prometheus metrics of the online monitor, served on loopback by default."""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from syslrn.errors import SyslrnError
from syslrn.monitor.online import Verdict

log = logging.getLogger(__name__)


def parse_address(text: str) -> tuple[str, int]:
    """Parse ``HOST:PORT`` (or ``PORT``, on 127.0.0.1)."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", text
    host = host.strip("[]") or "127.0.0.1"

    # isdigit() alone accepts digits such as "²" that int() rejects.
    if not (port.isascii() and port.isdigit()):
        raise SyslrnError(
            f"invalid --metrics {text!r}: expected HOST:PORT, e.g. 127.0.0.1:9464"
        )
    if not 0 < int(port) < 65536:
        raise SyslrnError(
            f"invalid --metrics {text!r}: port {int(port)} is out of range "
            "1..65535; give a port in that range, e.g. 127.0.0.1:9464"
        )
    return host, int(port)


class MonitorMetrics:
    """The gauges and counters one monitor exports, updated per window."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        labels = ["feature"]
        self.value = Gauge(
            "syslrn_feature_value",
            "Feature value in the last window",
            labels,
            registry=self.registry,
        )
        self.expected = Gauge(
            "syslrn_feature_expected",
            "Expected feature value for the last window's requests",
            labels,
            registry=self.registry,
        )
        self.tolerance = Gauge(
            "syslrn_feature_tolerance",
            "Tolerance of the feature",
            labels,
            registry=self.registry,
        )
        self.windows = Counter(
            "syslrn_windows", "Windows judged", ["verdict"], registry=self.registry
        )
        self.anomalies = Counter(
            "syslrn_feature_anomalies",
            "Windows in which the feature was outside its tolerance",
            labels,
            registry=self.registry,
        )
        self.requests = Counter(
            "syslrn_requests",
            "Requests counted at the trigger, read as each window is judged",
            registry=self.registry,
        )
        self._requests_seen = 0
        self.lost = Gauge(
            "syslrn_lost_events",
            "Events the kernel programs missed: a full process map, or a "
            "request that found no window opener or waited in vain for one",
            registry=self.registry,
        )
        self.lost_windows = Gauge(
            "syslrn_windows_lost",
            "Windows that closed and were overwritten before the monitor read them",
            registry=self.registry,
        )

    def serve(self, address: str) -> None:
        host, port = parse_address(address)
        try:
            start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise SyslrnError(
                f"cannot serve metrics on {host}:{port}: {exc.strerror}"
            ) from None
        log.info("metrics on http://%s:%d/metrics", host, port)

    def update(
        self,
        verdict: Verdict,
        requests_total: int,
        lost: int = 0,
        lost_windows: int = 0,
    ) -> None:
        """Export a judged window.

        ``requests_total`` is the kernel's count of every request so far,
        lost windows' included. The kernel only adds to it.
        """
        self.windows.labels("anomalous" if verdict.anomalous else "normal").inc()
        self.requests.inc(requests_total - self._requests_seen)
        self._requests_seen = requests_total
        self.lost.set(lost)
        self.lost_windows.set(lost_windows)
        for check in verdict.detection.checks():
            self.value.labels(check.feature).set(check.observed)
            self.expected.labels(check.feature).set(check.expected)
            self.tolerance.labels(check.feature).set(check.tolerance)
            if check.outside:
                self.anomalies.labels(check.feature).inc()
