"""Real recordings of a small forking server, end to end: train on them,
detect a missing child offline, monitor online with the tailored probes,
and check that the monitor counts what the recorder's trace shows.

The server and its children run under names no other process on the host
uses (copies and links in a temporary directory), so host-wide counts are
this test's own.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from syslrn.collect.clock import boottime_ns
from syslrn.collect.recorder import Recorder
from syslrn.collect.trigger import parse_trigger
from syslrn.embed import BagOfNodes
from syslrn.graph import build_graph
from syslrn.model import load_model
from syslrn.monitor import online
from syslrn.monitor.kernel import MonitorProbes
from syslrn.monitor.metrics import MonitorMetrics
from syslrn.monitor.online import Monitor
from syslrn.monitor.plan import make_plan
from syslrn.monitor.windows import cut_window
from syslrn.trace import read_trace

pytestmark = [pytest.mark.bpf, pytest.mark.slow]

SYSLRN = [sys.executable, "-m", "syslrn"]

# Accepts connections; per connection runs a shell that starts two
# children, or one when the fault file exists.
SERVER = textwrap.dedent(
    """
    import os, socket, subprocess, sys
    shell, child, fault = sys.argv[1], sys.argv[2], sys.argv[3]
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    print(srv.getsockname()[1], flush=True)
    while True:
        conn, _ = srv.accept()
        script = child if os.path.exists(fault) else f"{child}; {child}"
        subprocess.run([shell, "-c", script])
        conn.sendall(b"done")
        conn.close()
    """
)


class ForkingServer:
    def __init__(self, directory: Path):
        self.shell = directory / "slp-sh"
        self.child = directory / "slp-child"
        self.fault = directory / "fault"
        server = directory / "slp-server"
        shutil.copy("/bin/dash", self.shell)
        shutil.copy("/bin/true", self.child)
        os.symlink(sys.executable, server)
        self.proc = subprocess.Popen(
            [
                str(server),
                "-c",
                SERVER,
                str(self.shell),
                str(self.child),
                str(self.fault),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.port = int(self.proc.stdout.readline())
        self.trigger = f"tcp:{self.port}"

    def request(self, n: int) -> None:
        for _ in range(n):
            with socket.create_connection(("127.0.0.1", self.port)) as conn:
                assert conn.recv(4) == b"done"

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ForkingServer(tmp_path_factory.mktemp("server"))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def recorded_runs(server, tmp_path_factory):
    """Traces of the server at 1..5 requests, two runs each."""
    directory = tmp_path_factory.mktemp("runs")
    paths = []
    for requests in (1, 2, 3, 4, 5):
        for repeat in range(2):
            path = directory / f"r{requests}-{repeat}.parquet"
            with Recorder(path, trigger=server.trigger, labels={"phase": "workload"}):
                server.request(requests)
                time.sleep(0.1)
            paths.append(path)
    return paths


@pytest.fixture(scope="module")
def model_path(recorded_runs, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "model.json"
    result = subprocess.run(
        [*SYSLRN, "train", *map(str, recorded_runs), "-o", str(path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    return path


def test_train_keeps_child_features(model_path):
    model = json.loads(model_path.read_text())
    kept = {f["name"]: f for f in model["features"] if f["kept"]}
    for name, slope in (
        ("count:slp-child", 2.0),
        ("degree:slp-child", 2.0),
        ("count:slp-sh", 1.0),
        ("degree:slp-sh", 3.0),
    ):
        assert name in kept
        assert kept[name]["r2"] > 0.99
        assert kept[name]["slope"] == pytest.approx(slope, abs=0.05)
    # The server itself is one process whatever the load: not workload-driven.
    assert "count:slp-server" not in kept


def test_detect_flags_missing_child(server, model_path, tmp_path):
    normal = tmp_path / "normal.parquet"
    faulty = tmp_path / "faulty.parquet"
    with Recorder(normal, trigger=server.trigger):
        server.request(3)
        time.sleep(0.1)
    server.fault.touch()
    try:
        with Recorder(faulty, trigger=server.trigger):
            server.request(3)
            time.sleep(0.1)
    finally:
        server.fault.unlink()

    result = subprocess.run(
        [*SYSLRN, "detect", str(model_path), str(normal), str(faulty), "--json"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1, result.stderr
    verdicts = {Path(v["run"]).name: v for v in json.loads(result.stdout)["runs"]}
    assert verdicts["normal.parquet"]["anomalous"] is False
    assert verdicts["faulty.parquet"]["anomalous"] is True
    deviating = {d["feature"] for d in verdicts["faulty.parquet"]["deviating"]}
    assert "count:slp-child" in deviating


def _offline_features(trace, window, names):
    cut = cut_window(trace, window.open_ns, window.close_ns)
    features = BagOfNodes().features(build_graph(cut))
    return {name: int(features.get(name, 0)) for name in names}


def test_monitor_matches_recorder(server, model_path, tmp_path):
    """The invariant: for each window, the features the kernel counted equal
    those of the recorder's trace cut to the same window."""
    plan = make_plan(load_model(model_path).to_dict())
    names = plan.features
    probes = MonitorProbes(plan, parse_trigger(server.trigger), quiet_s=0.4)
    path = tmp_path / "both.parquet"
    with Recorder(path, trigger=server.trigger):
        probes.load()
        try:
            server.request(3)
            time.sleep(0.6)
            server.request(2)
            state = probes.state()
            first = probes.window(state.epoch - 1, state.previous)
            time.sleep(0.6)
            state = probes.state()
            second = probes.window(state.epoch, state.current)
        finally:
            probes.close()
    trace = read_trace(path)

    assert first.requests == 3
    assert second.requests == 2
    assert first.values["count:slp-child"] == 6
    for window in (first, second):
        assert window.values == _offline_features(trace, window, names)


# Runs the program at argv[1] from an open file descriptor, with no path.
FEXECVE = """
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
os.execve(fd, ["worker"], {})
"""


def test_monitor_matches_recorder_on_fexecve(tmp_path):
    # An exec of an open file names the file /dev/fd/N in the recorder's
    # exec event, while the kernel sets comm to the file's own name.
    program = tmp_path / "slp-fdexec"
    shutil.copy("/bin/true", program)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    trigger = f"tcp:{server.getsockname()[1]}"
    plan = make_plan({"features": [{"name": "count:slp-fdexec", "kept": True}]})
    probes = MonitorProbes(plan, parse_trigger(trigger), quiet_s=5.0)
    path = tmp_path / "fexecve.parquet"
    with Recorder(path, trigger=trigger):
        probes.load()
        try:
            client = socket.create_connection(server.getsockname())
            conn, _ = server.accept()
            subprocess.run([sys.executable, "-c", FEXECVE, str(program)], check=True)
            client.close()
            conn.close()
            state = probes.state()
            window = probes.window(state.epoch, state.current)
        finally:
            probes.close()
            server.close()
        time.sleep(0.2)
    trace = read_trace(path)

    assert window.values == {"count:slp-fdexec": 1}
    # The window is still open: the offline cut ends at the trace's end.
    end_ns = max(trace.table["ts_ns"].to_pylist()) + 1
    cut = cut_window(trace, window.open_ns, end_ns)
    features = BagOfNodes().features(build_graph(cut))
    assert features.get("count:slp-fdexec") == 1


def test_monitor_alerts_on_missing_child(server, model_path):
    model = load_model(model_path)
    monitor = Monitor(model, parse_trigger(server.trigger), quiet_s=0.4, poll_s=0.1)
    stop = threading.Event()
    thread = threading.Thread(target=monitor.run, args=(stop,))
    thread.start()
    try:
        assert monitor.started.wait(30)
        server.request(3)
        time.sleep(0.8)
        server.fault.touch()
        server.request(3)
        time.sleep(0.8)
    finally:
        server.fault.unlink(missing_ok=True)
        stop.set()
        thread.join(30)
    assert len(monitor.verdicts) == 2
    normal, faulty = monitor.verdicts
    assert normal.anomalous is False
    assert faulty.anomalous is True
    deviating = {check.feature for check in faulty.detection.deviating()}
    assert "count:slp-child" in deviating
    assert "count:slp-child" in faulty.human()


def test_monitor_cli_stops_on_sigterm(server, model_path, tmp_path):
    # As an operator runs it: no -v, alerts to a file, stopped by SIGTERM.
    alerts = tmp_path / "alerts.jsonl"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        metrics_port = probe.getsockname()[1]
    command = [*SYSLRN, "monitor", str(model_path), "--trigger", server.trigger]
    command += ["--quiet", "0.4", "--alerts", str(alerts), "--all-windows"]
    command += ["--metrics", f"127.0.0.1:{metrics_port}"]
    monitor = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    lines = []
    started = threading.Event()

    def read_stderr():
        for line in monitor.stderr:
            lines.append(line)
            if "monitoring tcp:" in line:
                started.set()

    reader = threading.Thread(target=read_stderr)
    reader.start()
    try:
        assert started.wait(30), "".join(lines)
        server.request(3)
        time.sleep(1.0)
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            metrics = response.read().decode()
    finally:
        monitor.send_signal(signal.SIGTERM)
        returncode = monitor.wait(30)
        reader.join(30)

    log = "".join(lines)
    assert returncode == 0, log
    assert "loaded 6 programs" in log
    assert "window 1 closed: 3 requests, normal" in log
    assert "received SIGTERM; stopping" in log
    assert "detached the monitor programs" in log
    assert "monitor stopped after 1 window judged, 0 lost" in log
    assert "syslrn: 1 window, 0 anomalous" in log
    verdicts = [json.loads(line) for line in alerts.read_text().splitlines()]
    assert [v["requests"] for v in verdicts] == [3]
    assert 'syslrn_windows_total{verdict="normal"} 1.0' in metrics
    assert "syslrn_requests_total 3.0" in metrics
    assert 'syslrn_feature_value{feature="count:slp-child"} 6.0' in metrics
    assert "syslrn_lost_events 0.0" in metrics
    assert "syslrn_windows_lost 0.0" in metrics


def _start_monitor_cli(model_path, server, *options, stdout=None):
    """Start ``syslrn monitor`` and return it once its probes are attached."""
    command = [*SYSLRN, "monitor", str(model_path), "--trigger", server.trigger]
    command += ["--quiet", "0.4", "--all-windows", *options]
    monitor = subprocess.Popen(
        command, stdout=stdout, stderr=subprocess.PIPE, text=True
    )
    lines = []
    for line in monitor.stderr:
        lines.append(line)
        if "monitoring tcp:" in line:
            return monitor, lines
    monitor.wait(30)
    pytest.fail("syslrn monitor did not start:\n" + "".join(lines))


def _finish_monitor_cli(monitor, lines):
    """Wait for the monitor to stop by itself; return its status and log."""
    try:
        returncode = monitor.wait(30)
    finally:
        monitor.kill()
    lines.extend(monitor.stderr)
    monitor.stderr.close()
    return returncode, "".join(lines)


def test_monitor_cli_stops_when_alerts_fail(server, model_path):
    # /dev/full fails every write with ENOSPC, as a full disk does. The
    # duration is beyond what a timer accepts, and must still work.
    monitor, lines = _start_monitor_cli(
        model_path, server, "--alerts", "/dev/full", "--duration", "1e10"
    )
    server.request(3)

    returncode, log = _finish_monitor_cli(monitor, lines)

    assert returncode == 1, log
    assert "Traceback" not in log
    assert "Exception in thread" not in log
    assert "window 1 (3 requests): normal" in log
    assert "detached the monitor programs" in log
    assert (
        "syslrn: error: cannot write window 1's alert to --alerts /dev/full: "
        "No space left on device; the monitor stopped"
    ) in log


def test_monitor_cli_stops_when_stdout_closes(server, model_path):
    monitor, lines = _start_monitor_cli(model_path, server, stdout=subprocess.PIPE)
    monitor.stdout.close()
    server.request(3)

    returncode, log = _finish_monitor_cli(monitor, lines)

    assert returncode == 1, log
    assert "Traceback" not in log
    assert "Exception ignored" not in log
    assert "detached the monitor programs" in log
    assert (
        "syslrn: error: cannot write window 1's alert: the reader of stdout closed it"
    ) in log


def test_monitor_metrics_count_lost_windows_requests(server, model_path):
    # A stalled poll loses windows, and their requests still count.
    model = load_model(model_path)
    metrics = MonitorMetrics()
    monitor = Monitor(model, parse_trigger(server.trigger), quiet_s=0.3, poll_s=5.0)

    def on_verdict(verdict):
        total = monitor.total_requests
        metrics.update(verdict, lost_windows=monitor.lost, requests_total=total)

    monitor.on_verdict = on_verdict
    stop = threading.Event()
    thread = threading.Thread(target=monitor.run, args=(stop,))
    thread.start()
    try:
        assert monitor.started.wait(30)
        for _ in range(4):
            server.request(2)
            time.sleep(0.5)
    finally:
        stop.set()
        thread.join(30)

    assert monitor.lost == 2
    assert [v.window.requests for v in monitor.verdicts] == [2, 2]
    registry = metrics.registry
    assert registry.get_sample_value("syslrn_requests_total") == 8
    assert registry.get_sample_value("syslrn_windows_lost") == 2


def test_poll_reads_clock_before_state(server, model_path, monkeypatch):
    # A poll preempted between its two reads, while a request keeps the
    # window open, must not judge that window early. A replaced clock
    # simulates the preemption: it waits past the quiet time, with a
    # request in between.
    model = load_model(model_path)
    monitor = Monitor(model, parse_trigger(server.trigger), quiet_s=0.5)

    def preempted_clock():
        time.sleep(0.35)
        server.request(1)
        time.sleep(0.25)
        return boottime_ns()

    monitor.probes.load()
    try:
        server.request(1)
        monkeypatch.setattr(online, "boottime_ns", preempted_clock)
        monitor.poll()
        monkeypatch.setattr(online, "boottime_ns", boottime_ns)
        time.sleep(0.7)
        monitor.poll()
    finally:
        monitor.probes.close()
    assert [verdict.window.requests for verdict in monitor.verdicts] == [2]


def test_monitor_logs_window_open_at_stop(server, model_path, caplog):
    model = load_model(model_path)
    monitor = Monitor(model, parse_trigger(server.trigger), quiet_s=5.0, poll_s=0.1)
    stop = threading.Event()
    thread = threading.Thread(target=monitor.run, args=(stop,))
    with caplog.at_level("WARNING", logger="syslrn.monitor.online"):
        thread.start()
        try:
            assert monitor.started.wait(30)
            server.request(2)
        finally:
            stop.set()
            thread.join(30)
    assert monitor.verdicts == []
    assert "window 1 was still open at stop (2 requests so far)" in caplog.text


def test_monitor_stalled_poll_loses_old_window(server, model_path, caplog):
    # Three windows pass before the first poll: the kernel still has the
    # second (closed) and the third (open), so the first is lost, and the
    # second must be judged with its own requests.
    model = load_model(model_path)
    monitor = Monitor(model, parse_trigger(server.trigger), quiet_s=0.3)
    monitor.probes.load()
    try:
        server.request(1)
        time.sleep(0.5)
        server.request(2)
        time.sleep(0.5)
        server.request(3)
        with caplog.at_level("WARNING", logger="syslrn.monitor.online"):
            monitor.poll()
    finally:
        monitor.probes.close()
    assert monitor.lost == 1
    assert "1 window closed unread and is lost (1..1)" in caplog.text
    assert [v.window.epoch for v in monitor.verdicts] == [2]
    second = monitor.verdicts[0].window
    assert second.requests == 2
    assert second.values["count:slp-child"] == 4


def test_monitor_counts_concurrent_first_requests(server, model_path):
    # Clients that connect at once race to open the window: each request
    # and its children must still count in it.
    plan = make_plan(load_model(model_path).to_dict())
    probes = MonitorProbes(plan, parse_trigger(server.trigger), quiet_s=0.3)
    probes.load()
    windows = []
    try:
        for _ in range(5):
            threads = [
                threading.Thread(target=server.request, args=(1,)) for _ in range(6)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            state = probes.state()
            windows.append(probes.window(state.epoch, state.current))
            time.sleep(0.5)
        errors = probes.errors()
    finally:
        probes.close()
    assert [w.epoch for w in windows] == [1, 2, 3, 4, 5]
    for window in windows:
        assert window.requests == 6
        assert window.values["count:slp-child"] == 12
        assert window.values["degree:slp-sh"] == 18
    assert errors == {"procs_full": 0, "no_opener": 0, "open_wait": 0}


def test_report_draws_recorded_runs(model_path, recorded_runs, tmp_path):
    out = tmp_path / "report"
    result = subprocess.run(
        [*SYSLRN, "report", str(model_path), *map(str, recorded_runs), "-o", str(out)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    index = (out / "index.html").read_text()
    pictures = sorted(out.glob("*.png"))
    assert len(pictures) >= 3
    assert all(p.stat().st_size > 1000 for p in pictures)
    for picture in pictures:
        assert picture.name in index
