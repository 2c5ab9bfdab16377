"""``syslrn plan`` warnings, run with --no-sizes or without capabilities so
that no program is loaded."""

from __future__ import annotations

import logging

from hand_models import count_model
from syslrn.cli import main
from syslrn.commands import plan as plan_command
from syslrn.model import save_model


def _model_file(path, *node_types):
    return save_model(count_model(*node_types, slope=1.0), path)


def _warnings(records):
    return [r.getMessage() for r in records if r.levelno == logging.WARNING]


def test_plan_without_capabilities_names_them(tmp_path, monkeypatch, caplog):
    path = _model_file(tmp_path / "model.json", "worker")
    monkeypatch.setattr(
        plan_command, "missing_capabilities", lambda: ["CAP_BPF", "CAP_PERFMON"]
    )

    assert main(["plan", str(path)]) == 0

    warnings = _warnings(caplog.records)
    assert len(warnings) == 1
    assert "not root" not in warnings[0]
    assert warnings[0].startswith("missing capability CAP_BPF and CAP_PERFMON")
    assert "so sizes are skipped" in warnings[0]
    assert "grant cap_bpf,cap_perfmon" in warnings[0]
    assert "--no-sizes" in warnings[0]


def test_plan_long_node_type_warns_of_prefix(tmp_path, capsys):
    path = _model_file(tmp_path / "model.json", "postgres-autovacuum")

    assert main(["plan", str(path), "--no-sizes"]) == 0

    out = capsys.readouterr().out
    assert "longer than 15 bytes" in out
    assert "its prefix b'postgres-autova'" in out
    assert "any other executable whose name starts with these 15 bytes" in out
    assert "is counted as 'postgres-autovacuum' too" in out
