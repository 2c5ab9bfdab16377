"""Throughput cost of monitoring redis-server: syslrn against logging.

redis-server from Debian listens on a unix socket only and keeps nothing
on disk. redis-benchmark runs SET, GET, LPUSH and LPOP with 50 clients and
keep-alive off, so every request is a new connection, accepted on the
socket that is the monitor's trigger. Each round measures every condition
once, in an order that rotates from round to round:

- baseline: nothing attached;
- logging: redis at ``loglevel verbose``, which logs every connection;
- monitor: the syslrn tailored monitor, with a model trained first on
  recorded redis runs of several sizes;
- recorder: the full syslrn recorder;
- bpftrace: a one-liner printing one line per accept to a file;
- repeat: the baseline again, whose drop is the noise floor.

Drops are taken against the same round's baseline. Run as root, from the
repository root, after ``scripts/setup --servers``:

    .venv/bin/python bench/overhead_redis.py
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(HERE))

import bpfstats  # noqa: E402
import overhead_stats  # noqa: E402
from overhead_conditions import (  # noqa: E402
    CONDITIONS,
    Bpftrace,
    Condition,
    TailoredMonitor,
)
from redisbench import OPERATIONS, BenchmarkError, RedisServer, schedstat  # noqa: E402

log = logging.getLogger("overhead_redis")

DEFAULT_CONDITIONS = (
    "baseline",
    "logging",
    "monitor",
    "recorder",
    "bpftrace",
    "repeat",
)
#: Median drops the product aims at, in percent.
TARGETS = {"monitor": 1.0, "recorder": 10.0}
#: Settling time between two conditions, after the previous one's tear-down
#: (a recorder's Parquet conversion, bpftrace's exit).
SETTLE_S = 0.5


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="rounds (default: 7)")
    parser.add_argument(
        "--requests",
        type=int,
        default=40000,
        help="requests per redis-benchmark test, -n (default: 40000)",
    )
    parser.add_argument(
        "--clients",
        type=int,
        default=50,
        help="redis-benchmark clients, -c (default: 50)",
    )
    parser.add_argument(
        "--conditions",
        default=",".join(DEFAULT_CONDITIONS),
        help="comma-separated conditions; baseline is always run "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--operations",
        default=",".join(OPERATIONS),
        help="comma-separated redis-benchmark tests (default: %(default)s)",
    )
    parser.add_argument(
        "--model",
        type=Path,
        help="model file for the monitor; default: train one on recorded redis runs",
    )
    parser.add_argument(
        "--save-model",
        type=Path,
        help="also write the model trained for the monitor to this file",
    )
    parser.add_argument(
        "--train-sizes",
        default="50,100,200,400",
        help="requests per training run, comma-separated (default: %(default)s)",
    )
    parser.add_argument(
        "--train-runs",
        type=int,
        default=3,
        help="training runs per size (default: %(default)s)",
    )
    parser.add_argument(
        "--quiet-host-wait",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="before each condition, wait up to this long for other processes' "
        "tracepoint programs to detach (default: %(default)s)",
    )
    parser.add_argument(
        "--bpf-stats",
        action="store_true",
        help="enable the kernel's BPF run-time statistics and report each "
        "program's run count and time (adds two clock reads per program run)",
    )
    parser.add_argument("--json", type=Path, help="write all results to this file")
    parser.add_argument(
        "--from-json",
        type=Path,
        metavar="FILE",
        help="measure nothing: summarize, tabulate and plot the results in FILE",
    )
    parser.add_argument("--plot", type=Path, help="draw the drops to this PNG file")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    args = parser.parse_args(argv)

    args.conditions = [c for c in args.conditions.split(",") if c]
    unknown = [c for c in args.conditions if c not in CONDITIONS]
    if unknown:
        parser.error(f"unknown conditions {unknown}; choose from {sorted(CONDITIONS)}")
    if "baseline" not in args.conditions:
        args.conditions.insert(0, "baseline")
    args.operations = [op for op in args.operations.split(",") if op]
    unknown = [op for op in args.operations if op not in OPERATIONS]
    if unknown:
        parser.error(f"unknown operations {unknown}; choose from {list(OPERATIONS)}")
    args.train_sizes = [int(n) for n in args.train_sizes.split(",") if n]
    if args.rounds < 1 or args.requests < 1 or args.clients < 1:
        parser.error("--rounds, --requests and --clients must be positive")
    return args


def machine_facts() -> dict[str, Any]:
    cpu_model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu_model = line.partition(":")[2].strip()
            break
    facts = {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_start": os.getloadavg(),
    }
    for tool, flag in (("redis-server", "--version"), ("bpftrace", "--version")):
        if shutil.which(tool):
            done = subprocess.run([tool, flag], capture_output=True, text=True)
            facts[tool] = done.stdout.strip()
    return facts


def train_redis_model(
    server: RedisServer, workdir: Path, sizes: list[int], runs: int
) -> Path:
    """Record redis runs of several sizes and train a model on them.

    Each run records while redis-benchmark sends SET requests with 5
    clients and keep-alive off; redis-benchmark is the recorder's child, so
    the kernel tags it as the workload driver and the ``driven=true`` label
    leaves it out of the features.
    """
    from syslrn.collect.recorder import Recorder

    traces = []
    for size in sizes:
        for index in range(runs):
            trace = workdir / f"train-{size}-{index}.parquet"
            recorder = Recorder(
                trace,
                trigger=server.trigger,
                labels={"driven": "true", "phase": "workload", "size": str(size)},
            )
            recorder.start()
            try:
                subprocess.run(
                    [
                        "redis-benchmark", "-s", str(server.socket), "-c", "5",
                        "-k", "0", "-n", str(size), "-t", "set", "-q",
                    ],
                    check=True, capture_output=True,
                )  # fmt: skip
            finally:
                meta = recorder.stop()
            log.info("training run %s: %s requests", trace.name, meta["requests"])
            traces.append(trace)

    model = workdir / "redis-model.json"
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    done = subprocess.run(
        [sys.executable, "-m", "syslrn", "train", *map(str, traces), "-o", str(model)],
        capture_output=True,
        text=True,
        env=env,
    )
    log.info("syslrn train:\n%s", done.stdout)
    if done.returncode != 0:
        raise BenchmarkError(
            f"syslrn train failed with status {done.returncode}: {done.stderr.strip()}"
        )
    return model


def tool_cpu_seconds(condition: Condition) -> float:
    """CPU time of this process (where the syslrn monitor and recorder run
    as threads) and of the condition's own processes, so far."""
    return time.process_time() + sum(schedstat(pid)[0] for pid in condition.tool_pids())


def foreign_tracepoints(own_pids: set[int]) -> set[str]:
    """Return the tracepoint programs other processes have attached, as
    ``pid:tracepoint``. Their programs run on redis's system calls too, in
    whichever condition they overlap."""
    return {
        f"{entry['pid']}:{entry['tracepoint']}"
        for entry in bpfstats.tracepoint_attachments()
        if entry["pid"] not in own_pids
    }


def measure(
    condition: Condition,
    server: RedisServer,
    workdir: Path,
    operations: list[str],
    requests: int,
    clients: int,
    bpf_stats: bool,
) -> dict[str, Any]:
    """Set a condition up, run the tests under it, tear it down."""
    condition.start(server, workdir)
    owner = condition.bpf_owner() if bpf_stats else None
    own_pids = {os.getpid(), *condition.tool_pids()}
    try:
        foreign = foreign_tracepoints(own_pids)
        before = bpfstats.programs_of(owner) if owner else {}
        ops = {}
        for op in operations:
            tool_before = tool_cpu_seconds(condition)
            result = server.benchmark(op, requests, clients)
            ops[op] = {
                "rps": result.rps,
                "requests": result.requests,
                "wall_s": result.wall_s,
                "server_cpu_s": result.server_cpu_s,
                "server_wait_s": result.server_wait_s,
                "client_cpu_s": result.client_cpu_s,
                "tool_cpu_s": tool_cpu_seconds(condition) - tool_before,
            }
        after = bpfstats.programs_of(owner) if owner else {}
        foreign |= foreign_tracepoints(own_pids)
    finally:
        facts = condition.stop()
    run: dict[str, Any] = {"ops": ops, "facts": facts, "foreign": sorted(foreign)}
    if owner:
        run["bpf"] = bpfstats.difference(before, after)
    return run


def run_rounds(
    args: argparse.Namespace, server: RedisServer, workdir: Path, model: Path | None
) -> list[dict[str, Any]]:
    conditions = {}
    for name in args.conditions:
        cls = CONDITIONS[name]
        conditions[name] = cls(model) if cls is TailoredMonitor else cls()

    # A first pass warms redis up (its list exists, its allocator has grown)
    # and is not kept.
    log.info("warm-up")
    measure(
        Condition(),
        server,
        workdir,
        args.operations,
        args.requests,
        args.clients,
        False,
    )

    rounds = []
    names = list(conditions)
    for index, order in enumerate(round_orders(len(names), args.rounds)):
        order = [names[i] for i in order]
        runs = {}
        for name in order:
            time.sleep(SETTLE_S)
            wait_for_quiet_host(args.quiet_host_wait)
            runs[name] = measure(
                conditions[name], server, workdir, args.operations,
                args.requests, args.clients, args.bpf_stats,
            )  # fmt: skip
            # Dirty pages of the last condition (the log, a trace) are
            # written back now rather than during the next one.
            os.sync()
            rates = {op: round(r["rps"]) for op, r in runs[name]["ops"].items()}
            log.info("round %d %s: %s %s", index + 1, name, rates, runs[name]["facts"])
        rounds.append({"round": index + 1, "order": order, "runs": runs})
    return rounds


def round_orders(conditions: int, rounds: int) -> list[list[int]]:
    """Return the order of the conditions in each round: the rows of a
    Williams Latin square, repeated as needed.

    Every condition comes once at every position, as in a plain rotation,
    and, unlike a rotation, after every other condition once (for an odd
    count, over twice as many rows), so whatever a condition leaves behind
    (page cache, a busy CPU) does not always fall on the same neighbour.
    """
    base = [0]
    low, high = 1, conditions - 1
    while len(base) < conditions:
        base.append(low)
        low += 1
        if len(base) < conditions:
            base.append(high)
            high -= 1
    rows = [[(b + shift) % conditions for b in base] for shift in range(conditions)]
    if conditions % 2:
        rows += [row[::-1] for row in rows]
    return [rows[i % len(rows)] for i in range(rounds)]


def wait_for_quiet_host(timeout: float) -> None:
    """Wait up to ``timeout`` seconds until no other process has tracepoint
    programs attached; they would run on redis's system calls too."""
    deadline = time.monotonic() + timeout
    while foreign_tracepoints({os.getpid()}):
        if time.monotonic() >= deadline:
            log.info("other tracepoint programs still attached; measuring anyway")
            return
        time.sleep(0.5)


def report(args, results: dict[str, Any]) -> str:
    labels = {name: CONDITIONS[name].label for name in args.conditions}
    summary = results["summary"]
    parts = []
    if "model" in results:
        kept_features = [
            f["name"] for f in results["model"]["features"] if f.get("kept")
        ]
        parts += [f"Monitor model: kept features {', '.join(kept_features)}.", ""]
    parts += [
        "Throughput drop against the same round's baseline, in %: median over "
        f"{args.rounds} rounds [quartiles]. Positive is slower.",
        "",
        overhead_stats.drop_table(summary, args.conditions, labels, args.operations),
        "",
        "CPU time per request over the four tests, in microseconds: redis-server "
        "alone, and with redis-benchmark and the monitoring tool; increases "
        "against the same round's baseline. Median [quartiles].",
        "",
        overhead_stats.cost_table(summary, args.conditions, labels),
    ]
    if summary["bpf"]:
        parts += [
            "",
            "BPF programs, over all rounds (kernel run-time statistics):",
            "",
            overhead_stats.bpf_table(summary, labels),
        ]
    runs = [run for round_ in results["rounds"] for run in round_["runs"].values()]
    shared = sum(1 for run in runs if run["foreign"])
    parts.append(
        f"\n{shared} of {len(runs)} condition runs overlapped tracepoint programs "
        "of other processes on the host (listed per run in the JSON results)."
    )
    clean = results["summary_clean"]
    if shared and clean["rps"]["baseline"]:
        parts += [
            "",
            "The same drops from the runs that overlapped no other tracepoint "
            "program, against a baseline that did not either (n: rounds):",
            "",
            overhead_stats.drop_table(
                clean, args.conditions, labels, args.operations, show_n=True
            ),
        ]
    for condition, target in TARGETS.items():
        drop = summary["drop_pct"].get(condition, {}).get(overhead_stats.ALL)
        if drop is not None:
            verdict = "met" if drop["median"] <= target else "MISSED"
            parts.append(
                f"\n{labels[condition]}: median drop {drop['median']:.1f}% over all "
                f"four tests, target {target:g}%: {verdict}"
            )
    return "\n".join(parts)


def collect(args: argparse.Namespace) -> dict[str, Any]:
    """Train the monitor's model if needed and run the rounds; return the
    results without their summaries."""
    if "bpftrace" in args.conditions and (reason := Bpftrace.available()):
        print(f"overhead_redis: leaving bpftrace out: {reason}", file=sys.stderr)
        args.conditions.remove("bpftrace")

    started = time.monotonic()
    results: dict[str, Any] = {"machine": machine_facts()}
    workdir = Path(tempfile.mkdtemp(prefix="syslrn-overhead-"))
    server = RedisServer(workdir / "redis")
    (workdir / "redis").mkdir()
    try:
        server.start()
        model = args.model
        if "monitor" in args.conditions and model is None:
            model = train_redis_model(
                server, workdir, args.train_sizes, args.train_runs
            )
        if model is not None:
            results["model"] = json.loads(Path(model).read_text())
        if args.save_model and args.model is None and model is not None:
            shutil.copyfile(model, args.save_model)
        if args.bpf_stats:
            with bpfstats.RuntimeStats():
                rounds = run_rounds(args, server, workdir, model)
        else:
            rounds = run_rounds(args, server, workdir, model)
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    results["machine"]["loadavg_end"] = os.getloadavg()
    results["config"] = {
        "rounds": args.rounds,
        "requests": args.requests,
        "clients": args.clients,
        "keepalive": False,
        "conditions": args.conditions,
        "operations": args.operations,
        "train_sizes": args.train_sizes if args.model is None else None,
        "train_runs": args.train_runs if args.model is None else None,
        "bpf_stats": args.bpf_stats,
        "quiet_host_wait_s": args.quiet_host_wait,
        "elapsed_s": time.monotonic() - started,
    }
    results["rounds"] = rounds
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s: %(message)s",
    )
    if args.from_json:
        results = json.loads(args.from_json.read_text())
        # The stored run decides what was measured, not the command line.
        for key in ("rounds", "conditions", "operations"):
            setattr(args, key, results["config"][key])
    else:
        results = collect(args)

    rounds = results["rounds"]
    results["summary"] = overhead_stats.summarize(
        rounds, args.conditions, args.operations
    )
    results["summary_clean"] = overhead_stats.summarize(
        rounds, args.conditions, args.operations, clean_only=True
    )
    print(report(args, results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    if args.plot:
        labels = {name: CONDITIONS[name].label for name in args.conditions}
        overhead_stats.plot(
            results["summary"], rounds, args.conditions, labels,
            args.operations, args.plot, TARGETS,
        )  # fmt: skip
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchmarkError as exc:
        print(f"overhead_redis: error: {exc}", file=sys.stderr)
        sys.exit(1)
