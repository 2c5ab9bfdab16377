"""Bad input to the recorder: each a one-line error naming the value, and
nothing written."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

SYSLRN = [sys.executable, "-m", "syslrn"]


def run_syslrn(*args, drop_capabilities=False):
    command = [*SYSLRN, *args]
    if drop_capabilities:
        # Root with an empty bounding set execs with no capabilities, like an
        # ordinary user, and still reaches the venv under /root.
        command = ["setpriv", "--bounding-set=-all", "--inh-caps=-all", *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("trigger", "message"),
    [
        ("tcp:http", "the port must be an integer"),
        ("tcp:70000", "the port must be an integer"),
        ("udp:53", "unknown family 'udp'"),
        ("5432", "expected tcp:PORT or unix:PATH"),
        ("unix:" + "x" * 120, "at most 107 bytes"),
    ],
)
def test_malformed_trigger_rejected(tmp_path, trigger, message):
    out = tmp_path / "t.parquet"
    result = run_syslrn("record", "-o", str(out), "--trigger", trigger, "--", "true")
    assert result.returncode == 2
    assert message in result.stderr
    assert repr(trigger) in result.stderr
    assert not out.exists()


def test_missing_output_directory_rejected(tmp_path):
    out = tmp_path / "no-such-dir" / "t.parquet"
    result = run_syslrn("record", "-o", str(out), "--", "true")
    assert result.returncode == 2
    assert f"directory {out.parent} does not exist" in result.stderr
    assert result.stderr.count("\n") == 1


def test_output_directory_given_as_file_rejected(tmp_path):
    result = run_syslrn("record", "-o", str(tmp_path), "--", "true")
    assert result.returncode == 2
    assert "is a directory" in result.stderr


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv")
def test_no_capabilities_names_them(tmp_path):
    out = tmp_path / "t.parquet"
    result = run_syslrn("record", "-o", str(out), "--", "true", drop_capabilities=True)
    assert result.returncode == 77
    assert "missing capability CAP_BPF and CAP_PERFMON" in result.stderr
    assert "run it as root" in result.stderr
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_negative_duration_rejected(tmp_path):
    result = run_syslrn("record", "-o", str(tmp_path / "t.parquet"), "--duration", "-1")
    assert result.returncode == 2
    assert "invalid value '-1': give a positive number of seconds" in result.stderr
