"""``syslrn monitor``: watch a service online with a model's tailored probes."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from syslrn.collect.trigger import parse_trigger
from syslrn.commands._argtypes import positive_seconds, trigger_text
from syslrn.commands._signals import StopOnSignals
from syslrn.commands.plan import load_planned_model
from syslrn.monitor.alerts import AlertWriter
from syslrn.monitor.metrics import MonitorMetrics, parse_address
from syslrn.monitor.online import Monitor
from syslrn.text import format_count

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "monitor",
        help="monitor a service online with the probes a model needs",
        description=(
            "Load the eBPF programs of the model's plan (see syslrn plan) and "
            "count its kept features in the kernel, in windows of requests. A "
            "request is a connection accepted at the trigger socket, and a window "
            "closes once no request came for the quiet time. Each closed window "
            "is judged by the model's rule: a line per window goes to stderr, "
            "and anomalies (every window with --all-windows) go as JSON lines to "
            "stdout or --alerts. Needs "
            "CAP_BPF and CAP_PERFMON, and runs until SIGINT or SIGTERM, or for "
            "--duration."
        ),
    )
    parser.add_argument(
        "model", metavar="MODEL", help="model file (JSON) written by syslrn train"
    )
    parser.add_argument(
        "--trigger",
        required=True,
        type=trigger_text,
        metavar="tcp:PORT|unix:PATH",
        help="the service socket whose accepted connections are requests",
    )
    parser.add_argument(
        "--alerts",
        metavar="FILE",
        help="append anomalies as JSON lines to FILE (default: stdout)",
    )
    parser.add_argument(
        "--all-windows",
        action="store_true",
        help="write every window's verdict as JSON, not only anomalies",
    )
    parser.add_argument(
        "--metrics",
        metavar="HOST:PORT",
        help="serve Prometheus metrics, e.g. 127.0.0.1:9464",
    )
    parser.add_argument(
        "--quiet",
        type=positive_seconds,
        metavar="SECONDS",
        help="quiet time that closes a window (default: from the model)",
    )
    parser.add_argument(
        "--wait-for-trigger",
        type=positive_seconds,
        metavar="SECONDS",
        help="wait up to this long for the trigger to listen (default: fail at once)",
    )
    parser.add_argument(
        "--duration",
        type=positive_seconds,
        metavar="SECONDS",
        help="stop after this long (default: until SIGINT or SIGTERM)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # A service logs its start, attach, windows, signals and stop without -v.
    if args.verbose == 0:
        for name in ("syslrn.monitor", __name__):
            logging.getLogger(name).setLevel(logging.INFO)
    model, _ = load_planned_model(args.model)
    trigger = parse_trigger(args.trigger)
    # Checked now, not only when the server starts after attach.
    if args.metrics:
        parse_address(args.metrics)
    trained_on = model.training.get("trigger")
    if trained_on is not None and parse_trigger(trained_on) != trigger:
        log.warning(
            "model %s was trained with requests counted at %s, and --trigger is %s",
            args.model,
            trained_on,
            trigger,
        )
    monitor = Monitor(model, trigger, quiet_s=args.quiet)
    metrics = MonitorMetrics() if args.metrics else None
    # Closed in the finally below.
    alerts = AlertWriter(args.alerts, all_windows=args.all_windows)
    log.info("model %s, trigger %s", args.model, trigger)

    def on_verdict(verdict):
        alerts(verdict)
        if metrics is not None:
            metrics.update(
                verdict,
                lost=sum(monitor.probes.errors().values()),
                lost_windows=monitor.lost,
                requests_total=monitor.total_requests,
            )

    monitor.on_verdict = on_verdict
    stop = threading.Event()
    with StopOnSignals(stop, _log_signal):
        try:
            if not monitor.wait_for_trigger(args.wait_for_trigger, stop):
                return 0
            if metrics is not None:
                metrics.serve(args.metrics)
            if args.duration is not None:
                # Event.wait rejects a timeout over TIMEOUT_MAX (about 292
                # years on Linux), which is as good as no timeout.
                duration = min(args.duration, threading.TIMEOUT_MAX)
                timer = threading.Timer(duration, stop.set)
                timer.daemon = True
                timer.start()
            verdicts = monitor.run(stop)
        finally:
            alerts.close()

    anomalies = sum(1 for v in verdicts if v.anomalous)
    windows = format_count(len(verdicts), "window")
    lost = f", {monitor.lost} lost" if monitor.lost else ""
    print(f"syslrn: {windows}, {anomalies} anomalous{lost}", file=sys.stderr)
    return 0


def _log_signal(signum: int) -> None:
    log.info("received %s; stopping", signal.Signals(signum).name)
