"""Bad input to the commands that write files: one clear line, nothing lost."""

from __future__ import annotations

import argparse
import json
import signal
import stat
import subprocess
import sys

import pytest

from hand_models import count_model
from learn_workloads import write_shell_run
from syslrn import cli
from syslrn.cli import build_parser
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


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "soon"])
def test_merge_rejects_bad_max_gap(tmp_path, value):
    a = _trace(tmp_path / "a.parquet", host="a")
    b = _trace(tmp_path / "b.parquet", host="b")
    result = run_syslrn(
        "merge", str(a), str(b), "-o", str(tmp_path / "m.parquet"), "--max-gap", value
    )
    assert result.returncode == 2
    assert "give a number of seconds of 0 or more" in result.stderr
    assert not (tmp_path / "m.parquet").exists()


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


def _model_file(path, edit):
    model = count_model("worker")
    document = model.to_dict()
    edit(document)
    path.write_text(json.dumps(document))
    return path


def _set_feature(**values):
    return lambda document: document["features"][0].update(values)


def _set_embedding(name):
    return lambda document: document["embedding"].update(name=name)


HAND_EDITS = [
    pytest.param(
        _set_feature(tolerance=-1),
        {"detect": "tolerance=-1 is negative", "plan": "tolerance=-1 is negative"},
        id="negative-tolerance",
    ),
    pytest.param(
        _set_feature(tolerance="wide"),
        {
            "detect": "tolerance='wide' is not a number",
            "plan": "tolerance='wide' is not a number",
        },
        id="text-tolerance",
    ),
    pytest.param(
        _set_embedding("bag-of-nodez"),
        {
            "detect": "embedding 'bag-of-nodez' is unknown",
            "plan": "embedding 'bag-of-nodez' cannot be monitored",
        },
        id="unknown-embedding",
    ),
    pytest.param(
        _set_feature(kept=False),
        {
            "detect": "the model keeps no feature",
            "plan": "the model keeps no feature",
        },
        id="no-kept-feature",
    ),
]


@pytest.mark.parametrize("command", ["detect", "plan", "monitor"])
@pytest.mark.parametrize(("edit", "messages"), HAND_EDITS)
def test_hand_edited_model_rejected(tmp_path, command, edit, messages):
    model = _model_file(tmp_path / "edited.json", edit)
    run = write_shell_run(tmp_path / "run.parquet", 4, 2)
    extra = {
        "detect": [str(run)],
        "plan": ["--no-sizes"],
        # The model is checked before any probe is loaded. The duration
        # bounds the run in case the check lets the model through.
        "monitor": ["--trigger", "tcp:1", "--duration", "1"],
    }

    result = run_syslrn(command, str(model), *extra[command])

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"syslrn: error: {model}: " in result.stderr
    assert messages.get(command, messages["plan"]) in result.stderr
    assert "train the model again" in result.stderr


def _set_training(**values):
    return lambda document: document["training"].update(values)


def test_monitor_rejects_quiet_beyond_float_range(tmp_path):
    # 1e300 s in nanoseconds overflows to infinity, so the check must come
    # before the conversion.
    model = _model_file(tmp_path / "m.json", lambda document: None)
    result = run_syslrn("monitor", str(model), "--trigger", "tcp:1", "--quiet", "1e300")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "invalid quiet time 1e+300 s" in result.stderr


def test_monitor_names_model_quiet_gap(tmp_path):
    model = _model_file(tmp_path / "m.json", _set_training(quiet_gap_s=1e300))
    result = run_syslrn("monitor", str(model), "--trigger", "tcp:1")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "invalid quiet time 2e+300 s" in result.stderr
    assert "training.quiet_gap_s gives it, so pass --quiet SECONDS" in result.stderr


def test_monitor_warns_of_other_trigger(tmp_path):
    model = _model_file(tmp_path / "m.json", _set_training(trigger="tcp:5432"))
    # Nothing listens on port 1, so the command stops after the warning.
    result = run_syslrn("monitor", str(model), "--trigger", "tcp:1")
    assert result.returncode == 2
    assert "trained with requests counted at tcp:5432, and --trigger is tcp:1" in (
        result.stderr
    )


def test_monitor_unix_trigger_error_explains_name(tmp_path):
    model = _model_file(tmp_path / "m.json", lambda document: None)
    path = tmp_path / "none.sock"
    result = run_syslrn("monitor", str(model), "--trigger", f"unix:{path}")
    assert result.returncode == 2
    assert f"trigger unix:{path}: nothing listens there" in result.stderr
    assert "the name the service bound, as /proc/net/unix shows it" in result.stderr


def test_monitor_checks_metrics_address_first(tmp_path):
    # Nothing listens on port 1, so a late check would report that instead.
    model = _model_file(tmp_path / "m.json", lambda document: None)
    result = run_syslrn(
        "monitor", str(model), "--trigger", "tcp:1", "--metrics", "127.0.0.1:99999"
    )
    assert result.returncode == 2
    assert "port 99999 is out of range 1..65535" in result.stderr
    assert "nothing listens" not in result.stderr


def test_monitor_stops_on_sigterm_while_waiting(tmp_path):
    model = _model_file(tmp_path / "m.json", lambda document: None)
    command = [*SYSLRN, "monitor", str(model), "--trigger", "tcp:1"]
    command += ["--wait-for-trigger", "60"]
    monitor = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        # The warning comes after the signal handlers are installed.
        for line in monitor.stderr:
            if "nothing listens yet; waiting up to 60 s" in line:
                break
        monitor.send_signal(signal.SIGTERM)
        returncode = monitor.wait(30)
    finally:
        monitor.kill()
    log = monitor.stderr.read()
    monitor.stderr.close()
    assert returncode == 0, log
    assert "received SIGTERM; stopping" in log
    assert "stopped while waiting for trigger tcp:1" in log


def test_plan_save_keeps_mode_and_symlink(tmp_path):
    target = _model_file(tmp_path / "v1.json", lambda document: None)
    target.chmod(0o600)
    link = tmp_path / "model.json"
    link.symlink_to(target.name)

    result = run_syslrn("plan", str(link), "--save", "--no-sizes")

    assert result.returncode == 0, result.stderr
    assert link.is_symlink()
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert json.loads(target.read_text())["plan"]["programs"]


def test_interrupt_while_importing_command(monkeypatch, capsys):
    # Ctrl-C lands in the command module's import, inside build_parser,
    # often enough at start-up; a subprocess cannot time it reliably.
    def interrupted(command=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", interrupted)

    assert cli.main(["monitor", "m.json"]) == 130
    assert capsys.readouterr().err == "syslrn: interrupted\n"


def _parsers(parser, path="syslrn"):
    """Yield every parser of the command line with its command path."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, f"{path} {name}")


def test_every_command_help_has_description():
    for path, parser in _parsers(build_parser()):
        assert parser.description, f"{path} -h shows no description"
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                listed = {a.dest for a in action._choices_actions}
                assert listed == set(action.choices), f"{path}: a command has no help"
            else:
                assert action.help, f"{path}: {action.dest} has no help"


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
