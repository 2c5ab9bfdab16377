"""Recorder throughput: fork storms and loopback TCP connection storms.

Each round runs every load twice, without and with the recorder attached,
in rotating order, so the ratio of the two rates is measured under the same
machine load. It reports the rates reached, the events recorded and lost
(at the default ring buffer size), and the recorder's own CPU time per
1,000 events. Run as root:

    .venv/bin/python bench/record_bench.py [--rounds 3] [--seconds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "src"))

from syslrn.collect.recorder import Recorder  # noqa: E402


def build_loads(out_dir: Path) -> dict[str, Path]:
    binaries = {}
    for name, extra in (("forkstorm", []), ("connstorm", ["-pthread"])):
        binary = out_dir / name
        subprocess.run(
            ["gcc", "-O2", *extra, "-o", str(binary), str(HERE / f"{name}.c")],
            check=True,
        )
        binaries[name] = binary
    return binaries


def run_load(binary: Path, workers: int, seconds: float) -> float:
    """Run a load generator; return the operations per second it reached."""
    start = time.monotonic()
    out = subprocess.run(
        [str(binary), str(workers), str(seconds)],
        capture_output=True,
        text=True,
        check=True,
    )
    elapsed = time.monotonic() - start
    return int(out.stdout) / max(elapsed, seconds)


def recorded_run(binary: Path, workers: int, seconds: float, trace: Path) -> dict:
    recorder = Recorder(trace)
    recorder.start()
    # Steady-state cost only: loading the programs and finishing the file
    # are fixed costs of a recording, reported apart.
    cpu_before = os.times()
    rate = run_load(binary, workers, seconds)
    time.sleep(0.2)
    cpu_after = os.times()
    meta = recorder.stop()
    cpu = (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)
    events = meta["events"]
    return {
        "rate": rate,
        "events": events,
        "lost": meta["lost"]["reserve_failed"],
        "cpu_s": cpu,
        "cpu_ms_per_1000_events": 1000 * 1000 * cpu / max(events, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--fork-workers", type=int, default=2)
    parser.add_argument("--conn-clients", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="syslrn-bench-"))
    loads = build_loads(workdir)
    plans = {
        "fork+exec+exit": (loads["forkstorm"], args.fork_workers),
        "tcp connect+accept": (loads["connstorm"], args.conn_clients),
    }
    results: dict[str, dict[str, list]] = {
        name: {"baseline": [], "recorded": []} for name in plans
    }
    for round_index in range(args.rounds):
        for name, (binary, workers) in plans.items():
            order = ["baseline", "recorded"]
            if round_index % 2:
                order.reverse()
            for condition in order:
                if condition == "baseline":
                    results[name]["baseline"].append(
                        run_load(binary, workers, args.seconds)
                    )
                else:
                    trace = workdir / f"{name.split()[0]}-{round_index}.parquet"
                    results[name]["recorded"].append(
                        recorded_run(binary, workers, args.seconds, trace)
                    )
                    trace.unlink()

    summary = {}
    for name, runs in results.items():
        recorded = runs["recorded"]
        summary[name] = {
            "baseline_per_s": statistics.median(runs["baseline"]),
            "recorded_per_s": statistics.median(r["rate"] for r in recorded),
            "events_per_s": statistics.median(
                r["events"] / args.seconds for r in recorded
            ),
            "lost_events": sum(r["lost"] for r in recorded),
            "recorder_cpu_ms_per_1000_events": statistics.median(
                r["cpu_ms_per_1000_events"] for r in recorded
            ),
            "rounds": args.rounds,
        }

    print(
        f"{'load':<20} {'baseline/s':>11} {'recorded/s':>11} {'ratio':>6} "
        f"{'events/s':>9} {'lost':>5} {'cpu ms/1k ev':>12}"
    )
    for name, row in summary.items():
        ratio = row["recorded_per_s"] / row["baseline_per_s"]
        print(
            f"{name:<20} {row['baseline_per_s']:>11.0f} {row['recorded_per_s']:>11.0f} "
            f"{ratio:>6.2f} {row['events_per_s']:>9.0f} {row['lost_events']:>5d} "
            f"{row['recorder_cpu_ms_per_1000_events']:>12.2f}"
        )
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
