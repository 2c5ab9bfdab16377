"""The demo's pipeline on a tiny campaign of the real PostgreSQL server."""

from __future__ import annotations

import io
import shutil
import tempfile
from pathlib import Path

import pytest

from syslrn.evaluate.demo import run_demo

pytestmark = [pytest.mark.bpf, pytest.mark.slow]


@pytest.fixture
def scratch(monkeypatch):
    """The directory that tempfile hands out, for this test alone. It is
    under /tmp, as the default is, because the server's user must reach
    the scenario's files, and pytest's directories are private."""
    directory = Path(tempfile.mkdtemp(prefix="slt-scratch-", dir="/tmp"))
    directory.chmod(0o711)
    monkeypatch.setattr(tempfile, "tempdir", str(directory))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def test_demo_flags_faulty_run_only(tmp_path, capsys, scratch):
    out = io.StringIO()
    result = run_demo(tmp_path / "demo", runs=8, sizes=(1, 2, 3, 4), out=out)
    text = out.getvalue()
    # The train and plan steps print through the commands, to stdout.
    printed = capsys.readouterr().out

    assert (tmp_path / "demo" / "model.json").exists()
    assert (tmp_path / "demo" / "campaign" / "index.csv").exists()
    assert result.kept > 0
    assert result.normal is not None
    assert result.normal.anomalous is False
    assert result.faulty is not None
    assert result.faulty.anomalous is True
    assert result.passed
    assert "programs (" in printed
    assert "kept" in printed
    assert text.rstrip().splitlines()[-1].startswith("syslrn demo ok: kept")
    # The scenario's working directories go with it.
    assert list(scratch.iterdir()) == []
