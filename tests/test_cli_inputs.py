"""Bad input to the commands that write files: one clear line, nothing lost."""

from __future__ import annotations

import subprocess
import sys

import pytest

from syslrn.trace import read_trace, table_from_rows, write_trace

SYSLRN = [sys.executable, "-m", "syslrn"]


def run_syslrn(*args):
    return subprocess.run([*SYSLRN, *args], capture_output=True, text=True, timeout=60)


def _trace(path, host="h"):
    rows = [
        {
            "ts_ns": 1,
            "host": host,
            "kind": "exec",
            "pid": 10,
            "start_ns": 5,
            "comm": "sh",
            "filename": "/bin/sh",
        }
    ]
    write_trace(
        path, table_from_rows(rows), {"host": host, "labels": {"requests": "1"}}
    )
    return path


def test_record_keeps_existing_trace(tmp_path):
    path = _trace(tmp_path / "keep.parquet")
    before = path.read_bytes()
    result = run_syslrn("record", "-o", str(path), "--", "true")
    assert result.returncode == 2
    assert "file exists; pass --force" in result.stderr
    assert path.read_bytes() == before


def test_record_missing_command_writes_nothing(tmp_path):
    path = tmp_path / "t.parquet"
    result = run_syslrn("record", "-o", str(path), "--", "/no/such/command")
    assert result.returncode == 2
    assert "'/no/such/command' not found" in result.stderr
    assert not path.exists()


def test_record_rejects_device_output():
    result = run_syslrn("record", "-o", "/dev/null", "--", "true")
    assert result.returncode == 2
    assert "is not a regular file" in result.stderr


def test_record_rejects_live_journal(tmp_path):
    path = tmp_path / "t.parquet"
    (tmp_path / "t.parquet.journal").write_bytes(b"")
    result = run_syslrn("record", "-o", str(path), "--", "true")
    assert result.returncode == 2
    assert "another recording writes there" in result.stderr


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--duration", "nan"),
        ("--duration", "0"),
        ("--ringbuf-size", "3"),
        ("--ringbuf-size", "0"),
        ("--label", "requests=abc"),
        ("--label", "requests=-4"),
    ],
)
def test_record_rejects_bad_option(tmp_path, option, value):
    result = run_syslrn(
        "record", "-o", str(tmp_path / "t.parquet"), option, value, "--", "true"
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert value in result.stderr


@pytest.mark.parametrize("value", ["nan", "0", "-1"])
def test_monitor_rejects_bad_quiet(tmp_path, value):
    result = run_syslrn(
        "monitor", str(tmp_path / "m.json"), "--trigger", "tcp:1", "--quiet", value
    )
    assert result.returncode == 2
    assert "give a positive number of seconds" in result.stderr


def test_merge_refuses_to_overwrite_input(tmp_path):
    a = _trace(tmp_path / "a.parquet", host="a")
    b = _trace(tmp_path / "b.parquet", host="b")
    before = a.read_bytes()
    result = run_syslrn("merge", str(a), str(b), "-o", str(a))
    assert result.returncode == 2
    assert "is also the input" in result.stderr
    assert a.read_bytes() == before


def test_train_refuses_to_overwrite_input(tmp_path):
    a = _trace(tmp_path / "a.parquet")
    before = a.read_bytes()
    result = run_syslrn("train", str(a), "-o", str(a))
    assert result.returncode == 2
    assert "is also the input" in result.stderr
    assert a.read_bytes() == before
    assert read_trace(a).table.num_rows == 1


def test_monitor_command_loads_no_heavy_library():
    # The monitor runs for days beside the service: its memory must not
    # carry pyarrow or scikit-learn, which only the offline commands use.
    code = (
        "import sys, syslrn.cli as cli; cli.build_parser('monitor');"
        "import syslrn.model.file, syslrn.monitor.online, syslrn.monitor.metrics;"
        "print(sorted({m.split('.')[0] for m in sys.modules} &"
        " {'pyarrow', 'sklearn', 'scipy', 'matplotlib', 'torch'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
