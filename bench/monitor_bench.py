"""The tailored monitor's own cost: CPU idle and under a fork storm, resident
memory, and instructions per program, beside the full recorder's.

It trains a model from a generated feature table (count and degree of
`true`, which the fork storm runs), starts `syslrn monitor` on it, and
reads the monitor process's CPU time and VmRSS from procfs. With
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


def make_model(directory: Path) -> Path:
    table = directory / "features.csv"
    with table.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "requests", "label", "count:true", "degree:true"])
        for i, requests in enumerate([1, 2, 3, 4, 5, 6] * 2):
            writer.writerow([f"r{i}", requests, "none", 2 * requests, 2 * requests])
    model = directory / "model.json"
    subprocess.run(
        [*SYSLRN, "train", str(table), "-o", str(model)],
        check=True,
        capture_output=True,
    )
    return model


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
    model = make_model(work)
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
    plan = json.loads(
        subprocess.run(
            [*SYSLRN, "plan", str(model), "--json"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    sizes = plan["instructions"]
    recorder = plan["recorder_instructions"]
    result = {
        "idle_cpu_percent": 100 * idle_cpu / args.idle,
        "storm_cpu_percent": 100 * storm_cpu / elapsed,
        "storm_processes_per_s": processes / elapsed,
        "rss_mib": rss,
        "programs": sizes,
        "mean_instructions": sum(sizes.values()) / len(sizes),
        "recorder_mean_instructions": sum(recorder.values()) / len(recorder),
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
    print(
        "instructions per program: " + ", ".join(f"{k} {v}" for k, v in sizes.items())
    )
    print(
        f"mean: {result['mean_instructions']:.0f} (full recorder: "
        f"{result['recorder_mean_instructions']:.0f})"
    )
    for name, ns in result["bpf_ns_per_run"].items():
        print(f"  {name}: {ns:.0f} ns per run in the kernel")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
