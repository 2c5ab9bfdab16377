"""The tailored monitor's own cost: CPU idle and under a fork storm, resident
memory, and instructions per program, beside the full recorder's.

It trains a model from a generated feature table (count and degree of
`true`, which the fork storm runs), starts `syslrn monitor` on it, and
reads the monitor process's CPU time and VmRSS from procfs. It also plans
a model that keeps `count:true` only, for the counts-only programs. With
kernel.bpf_stats_enabled it also reports the programs' run time, which the
kernel charges to the processes that hit the tracepoints, not to the
monitor. Run as root:

    .venv/bin/python bench/monitor_bench.py [--idle 10] [--storm 5]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
SYSLRN = [sys.executable, "-m", "syslrn"]
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def make_model(directory: Path, features: list[str]) -> Path:
    """Train a model whose features all follow 2 x requests exactly."""
    name = "-".join(f.partition(":")[0] for f in features)
    table = directory / f"{name}.csv"
    with table.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "requests", "label", *features])
        for i, requests in enumerate([1, 2, 3, 4, 5, 6] * 2):
            writer.writerow(
                [f"r{i}", requests, "none", *[2 * requests] * len(features)]
            )
    model = directory / f"{name}.json"
    subprocess.run(
        [*SYSLRN, "train", str(table), "-o", str(model)],
        check=True,
        capture_output=True,
    )
    return model


def planned_sizes(model: Path, trigger: str) -> tuple[dict[str, int], dict[str, int]]:
    """Return the instructions of the model's programs and of the recorder's."""
    plan = json.loads(
        subprocess.run(
            [*SYSLRN, "plan", str(model), "--trigger", trigger, "--json"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    return plan["instructions"], plan["recorder_instructions"]


def mean(sizes: dict[str, int]) -> float:
    return sum(sizes.values()) / len(sizes)


def program_stats() -> dict[str, tuple[int, int]]:
    out = subprocess.run(
        ["bpftool", "prog", "show", "--json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {
        p["name"]: (p.get("run_time_ns", 0), p.get("run_cnt", 0))
        for p in json.loads(out)
        if p.get("name", "").startswith("mon_")
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=float, default=10.0, help="seconds idle")
    parser.add_argument(
        "--storm", type=float, default=5.0, help="seconds of fork storm"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="syslrn-monbench-"))
    model = make_model(work, ["count:true", "degree:true"])
    counts_model = make_model(work, ["count:true"])
    forkstorm = work / "forkstorm"
    subprocess.run(
        ["gcc", "-O2", "-o", str(forkstorm), str(HERE / "forkstorm.c")], check=True
    )
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]

    subprocess.run(["sysctl", "-q", "kernel.bpf_stats_enabled=1"], check=False)
    monitor = subprocess.Popen(
        [*SYSLRN, "monitor", str(model), "--trigger", f"tcp:{port}"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(3.0)
        if monitor.poll() is not None:
            raise SystemExit(f"monitor exited: {monitor.stderr.read()}")
        before = cpu_seconds(monitor.pid)
        time.sleep(args.idle)
        idle_cpu = cpu_seconds(monitor.pid) - before

        stats_before = program_stats()
        before = cpu_seconds(monitor.pid)
        started = time.monotonic()
        out = subprocess.run(
            [str(forkstorm), "2", str(args.storm)],
            capture_output=True,
            text=True,
            check=True,
        )
        elapsed = time.monotonic() - started
        storm_cpu = cpu_seconds(monitor.pid) - before
        stats_after = program_stats()
        rss = rss_mib(monitor.pid)
    finally:
        monitor.terminate()
        monitor.wait(timeout=30)
        listener.close()

    processes = int(out.stdout)
    runtime = {
        name: (
            stats_after[name][0] - stats_before.get(name, (0, 0))[0],
            stats_after[name][1] - stats_before.get(name, (0, 0))[1],
        )
        for name in stats_after
    }
    sizes, recorder = planned_sizes(model, f"tcp:{port}")
    counts_sizes, _ = planned_sizes(counts_model, f"tcp:{port}")
    result = {
        "idle_cpu_percent": 100 * idle_cpu / args.idle,
        "storm_cpu_percent": 100 * storm_cpu / elapsed,
        "storm_processes_per_s": processes / elapsed,
        "rss_mib": rss,
        "programs": sizes,
        "mean_instructions": mean(sizes),
        "counts_programs": counts_sizes,
        "counts_mean_instructions": mean(counts_sizes),
        "recorder_mean_instructions": mean(recorder),
        "bpf_ns_per_run": {
            name: ns / count for name, (ns, count) in runtime.items() if count
        },
    }
    print(
        f"monitor CPU idle:        {result['idle_cpu_percent']:.3f}% of a core "
        f"over {args.idle:.0f} s"
    )
    print(
        f"monitor CPU, fork storm: {result['storm_cpu_percent']:.3f}% of a core "
        f"({result['storm_processes_per_s']:.0f} processes/s)"
    )
    print(f"monitor resident memory: {rss:.1f} MiB")
    for label, plan_sizes in (("degrees too", sizes), ("counts only", counts_sizes)):
        listed = ", ".join(f"{k} {v}" for k, v in plan_sizes.items())
        print(
            f"instructions per program, {label}: {listed}; mean {mean(plan_sizes):.1f}"
        )
    print(f"full recorder, mean: {result['recorder_mean_instructions']:.0f}")
    for name, ns in result["bpf_ns_per_run"].items():
        print(f"  {name}: {ns:.0f} ns per run in the kernel")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
