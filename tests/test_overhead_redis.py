"""The redis overhead benchmark's harness, on one tiny round of real runs.

The tests check that the harness measures what it reports: redis-benchmark's
output is parsed, every condition sees the requests it should, and the
summary has a row per operation. They make no timing assertion.
"""

from __future__ import annotations

import itertools
import json
import shutil
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

import overhead_redis  # noqa: E402
import overhead_stats  # noqa: E402
from redisbench import (  # noqa: E402
    OPERATIONS,
    BenchmarkError,
    RedisServer,
    parse_benchmark_csv,
)

needs_redis = pytest.mark.skipif(
    shutil.which("redis-server") is None or shutil.which("redis-benchmark") is None,
    reason="needs redis-server and redis-tools (scripts/setup --servers)",
)

REQUESTS = 200


@pytest.fixture
def redis(tmp_path):
    server = RedisServer(tmp_path / "redis")
    (tmp_path / "redis").mkdir()
    server.start()
    yield server
    server.stop()


@needs_redis
@pytest.mark.slow
def test_benchmark_result_from_real_run(redis):
    result = redis.benchmark("lpush", REQUESTS, clients=5)

    assert result.operation == "lpush"
    assert result.requests == REQUESTS
    assert result.rps > 0
    assert result.server_cpu_s > 0
    assert result.client_cpu_s > 0
    # The list is on the server: LPUSH really ran.
    assert int(redis.cli("LLEN", "mylist")) >= REQUESTS


@needs_redis
@pytest.mark.slow
def test_parse_csv_of_several_tests(redis):
    import subprocess

    done = subprocess.run(
        [
            "redis-benchmark", "-s", str(redis.socket), "-c", "2", "-k", "0",
            "-n", "50", "-t", "set,get", "--csv",
        ],
        capture_output=True, text=True, check=True,
    )  # fmt: skip

    rates = parse_benchmark_csv(done.stdout)

    assert set(rates) == {"set", "get"}
    assert all(rate > 0 for rate in rates.values())


def test_parse_csv_rejects_quiet_output():
    with pytest.raises(BenchmarkError, match="no 'test' and 'rps' columns"):
        parse_benchmark_csv("SET: 7812.50 requests per second, p50=4.975 msec\n")


def test_parse_csv_rejects_header_only():
    with pytest.raises(BenchmarkError, match="no test row"):
        parse_benchmark_csv('"test","rps","avg_latency_ms"\n')


def _run(ops: dict[str, float], requests: int = 100) -> dict:
    return {
        "ops": {
            op: {
                "rps": rps,
                "requests": requests,
                "wall_s": requests / rps,
                "server_cpu_s": requests * 40e-6,
                "server_wait_s": 0.0,
                "client_cpu_s": requests * 30e-6,
                "tool_cpu_s": 0.0,
            }
            for op, rps in ops.items()
        }
    }


def test_summary_drops_against_same_round():
    ops = ("set", "get")
    rounds = [
        {"runs": {"baseline": _run({"set": 1000, "get": 2000}),
                  "logging": _run({"set": 500, "get": 1500})}},
        {"runs": {"baseline": _run({"set": 100, "get": 200}),
                  "logging": _run({"set": 50, "get": 150})}},
    ]  # fmt: skip

    summary = overhead_stats.summarize(rounds, ["baseline", "logging"], ops)

    drops = summary["drop_pct"]["logging"]
    assert drops["set"]["median"] == pytest.approx(50.0)
    assert drops["get"]["median"] == pytest.approx(25.0)
    # All four: total requests over total time, 200 / (0.2 + 0.0667) s
    # against 200 / (0.1 + 0.05) s in the first round.
    assert drops["all"]["median"] == pytest.approx(100 * (1 - 0.15 / (0.2 + 1 / 15)))
    assert summary["rps"]["baseline"]["set"]["min"] == 100
    assert summary["cost"]["logging"]["server_increase_pct"]["median"] == pytest.approx(
        0.0
    )


@pytest.mark.parametrize("conditions", [2, 5, 6])
def test_round_orders_balance_positions_and_neighbours(conditions):
    rows = 2 * conditions if conditions % 2 else conditions
    orders = overhead_redis.round_orders(conditions, rows)

    repeats = rows // conditions
    for position in range(conditions):
        assert sorted(order[position] for order in orders) == sorted(
            list(range(conditions)) * repeats
        )
    followers = [(a, b) for order in orders for a, b in itertools.pairwise(order)]
    distinct = {(a, b) for a in range(conditions) for b in range(conditions) if a != b}
    assert set(followers) == distinct
    assert len(followers) == len(distinct) * repeats


def _main(tmp_path, *args) -> dict:
    output = tmp_path / "results.json"
    plot = tmp_path / "drops.png"
    status = overhead_redis.main(
        ["--rounds", "1", "--requests", str(REQUESTS), "--json", str(output),
         "--plot", str(plot), "--quiet-host-wait", "0", *args]
    )  # fmt: skip
    assert status == 0
    assert plot.stat().st_size > 0
    return json.loads(output.read_text())


@needs_redis
@pytest.mark.slow
def test_tiny_round_with_logging(tmp_path, capsys):
    results = _main(tmp_path, "--conditions", "baseline,logging")

    runs = results["rounds"][0]["runs"]
    assert set(runs) == {"baseline", "logging"}
    assert set(runs["baseline"]["ops"]) == set(OPERATIONS)
    # loglevel verbose writes a line per accepted and per closed connection.
    assert runs["logging"]["facts"]["log_bytes"] > 2 * len(OPERATIONS) * REQUESTS * 40
    assert set(results["summary"]["drop_pct"]) == {"logging"}

    table = capsys.readouterr().out
    for row in ("| SET |", "| GET |", "| LPUSH |", "| LPOP |", "| all four |"):
        assert row in table
    assert "request logging (drop %)" in table


@needs_redis
@pytest.mark.skipif(shutil.which("bpftrace") is None, reason="needs bpftrace")
@pytest.mark.slow
@pytest.mark.bpf
def test_tiny_round_with_bpf_conditions(tmp_path):
    results = _main(
        tmp_path,
        "--conditions", "baseline,monitor,recorder,bpftrace",
        "--train-sizes", "10,20,40",
        "--train-runs", "1",
        "--bpf-stats",
    )  # fmt: skip

    runs = results["rounds"][0]["runs"]
    least = len(OPERATIONS) * REQUESTS
    kept_features = [f["name"] for f in results["model"]["features"] if f["kept"]]
    assert "degree:redis-server" in kept_features
    assert runs["monitor"]["facts"]["windows"] >= 1
    assert runs["monitor"]["facts"]["requests"] >= least
    assert runs["recorder"]["facts"]["requests"] >= least
    assert runs["recorder"]["facts"]["lost_events"] == 0
    assert runs["bpftrace"]["facts"]["accept_lines"] >= least
    # The kernel's run counts name each condition's own programs.
    assert runs["monitor"]["bpf"]["mon_accept_deg"]["run_cnt"] >= least
    assert runs["recorder"]["bpf"]["handle_exit_accept4"]["run_cnt"] >= least
    assert sum(p["run_cnt"] for p in runs["bpftrace"]["bpf"].values()) >= least
