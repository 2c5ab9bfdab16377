"""The monitor's alert output: JSON lines that stay valid when writes fail."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import textwrap

import pytest

from hand_models import count_model
from syslrn.errors import SyslrnError
from syslrn.monitor.alerts import AlertWriter
from syslrn.monitor.kernel import WindowFeatures
from syslrn.monitor.online import Verdict


def _verdict(epoch: int, count: int = 8) -> Verdict:
    model = count_model("worker")
    window = WindowFeatures(
        epoch=epoch,
        open_ns=epoch * 10**9,
        close_ns=epoch * 10**9 + 5 * 10**8,
        requests=4,
        values={"count:worker": count},
    )
    return Verdict(window=window, detection=model.detect(window.values, 4))


def _json_lines(path):
    text = path.read_text()
    assert text.endswith("\n"), text[-80:]
    return [json.loads(line) for line in text.splitlines()]


def test_writes_anomalies_only_by_default(tmp_path):
    path = tmp_path / "alerts.jsonl"
    human = io.StringIO()
    writer = AlertWriter(str(path), human=human)

    writer(_verdict(1, count=8))
    writer(_verdict(2, count=0))
    writer.close()

    lines = _json_lines(path)
    assert [line["window"] for line in lines] == [2]
    assert lines[0]["deviating"][0]["feature"] == "count:worker"
    assert human.getvalue().splitlines() == [
        "window 1 (4 requests): normal",
        "window 2 (4 requests): ANOMALY: count:worker observed 0, expected 8.0 +/- 1.0",
    ]


# Writes verdicts into a file capped by RLIMIT_FSIZE until one fails, as a
# full disk fails them. SIGXFSZ would end the process, so it is ignored and
# the write fails with EFBIG instead.
CAPPED_WRITER = textwrap.dedent(
    """
    import resource, signal, sys
    sys.path.insert(0, sys.argv[3])
    from test_alerts import _verdict
    from syslrn.errors import SyslrnError
    from syslrn.monitor.alerts import AlertWriter

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    limit = int(sys.argv[2])
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    writer = AlertWriter(sys.argv[1], all_windows=True)
    try:
        for epoch in range(1, 1000):
            writer(_verdict(epoch))
    except SyslrnError as exc:
        print(exc)
    """
)


def test_failed_write_leaves_whole_lines(tmp_path):
    path = tmp_path / "alerts.jsonl"
    # The limit falls inside a line, so one write stops part-way.
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            CAPPED_WRITER,
            str(path),
            "2000",
            os.path.dirname(__file__),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    lines = _json_lines(path)
    assert len(lines) > 0
    assert path.stat().st_size < 2000
    failed = len(lines) + 1
    assert (
        f"cannot write window {failed}'s alert to --alerts {path}: File too large"
        in (result.stdout)
    )
    assert "make room or give another --alerts FILE" in result.stdout


def test_partial_last_line_is_ended(tmp_path, caplog):
    path = tmp_path / "alerts.jsonl"
    path.write_text('{"window": 1}\n{"window": 2, "fea')

    writer = AlertWriter(str(path), all_windows=True, human=io.StringIO())
    writer(_verdict(3))
    writer.close()

    lines = path.read_text().splitlines()
    assert lines[1] == '{"window": 2, "fea'
    assert json.loads(lines[2])["window"] == 3
    assert f"--alerts {path} ends inside a line" in caplog.text


def test_closed_fifo_named_in_error(tmp_path):
    fifo = tmp_path / "alerts.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    writer = AlertWriter(str(fifo), all_windows=True, human=io.StringIO())
    os.close(reader)

    with pytest.raises(SyslrnError) as error:
        writer(_verdict(1))
    writer.close()

    assert error.value.exit_code == 1
    assert f"the reader of --alerts {fifo} closed it" in str(error.value)


def test_closed_human_stream_keeps_alerts(tmp_path):
    path = tmp_path / "alerts.jsonl"
    read_end, write_end = os.pipe()
    os.close(read_end)
    human = open(write_end, "w")  # noqa: SIM115
    writer = AlertWriter(str(path), all_windows=True, human=human)

    writer(_verdict(1))
    writer(_verdict(2))
    writer.close()

    # The failed line is still in the stream's buffer.
    with contextlib.suppress(BrokenPipeError):
        human.close()

    assert [line["window"] for line in _json_lines(path)] == [1, 2]
