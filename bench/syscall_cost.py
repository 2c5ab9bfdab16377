"""Cost of one system call while syslrn's probes are attached.

Syscall tracepoints are switched on for every task at once. While any
program is attached to one of them, each system call of each process
takes the kernel's tracing path on entry and exit, even a call that no
program watches. This script measures what that adds to getppid(2), a
call none of syslrn's programs attach to, with nothing attached, with the
tailored monitor's programs for a model that keeps ``degree:T`` (the
most a plan loads) and with the full recorder. Rounds alternate the three
and report the median CPU time per call. Run as root:

    .venv/bin/python bench/syscall_cost.py [--rounds 7] [--calls 2000000]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from bpfstats import tracepoint_attachments  # noqa: E402
from syslrn.collect.recorder import Recorder  # noqa: E402
from syslrn.collect.trigger import parse_trigger  # noqa: E402
from syslrn.monitor.kernel import MonitorProbes  # noqa: E402
from syslrn.monitor.plan import make_plan  # noqa: E402

# The trigger only has to parse; no request arrives during the loop.
TRIGGER = "unix:/nonexistent/syslrn-syscall-cost.sock"


def ns_per_call(binary: Path, calls: int) -> float:
    done = subprocess.run(
        [str(binary), str(calls)], capture_output=True, text=True, check=True
    )
    return float(done.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=2_000_000)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="syslrn-syscall-"))
    try:
        binary = workdir / "syscallloop"
        subprocess.run(
            ["gcc", "-O2", "-o", str(binary), str(HERE / "syscallloop.c")], check=True
        )
        plan = make_plan({"features": [{"name": "degree:redis-server", "kept": True}]})
        results: dict[str, list[float]] = {"none": [], "monitor": [], "recorder": []}
        shared = 0
        for _ in range(args.rounds):
            # Other processes' syscall tracepoints would slow the "none" case.
            shared += bool(tracepoint_attachments())
            results["none"].append(ns_per_call(binary, args.calls))

            probes = MonitorProbes(plan, parse_trigger(TRIGGER), quiet_s=1.0)
            probes.load()
            try:
                results["monitor"].append(ns_per_call(binary, args.calls))
            finally:
                probes.close()

            trace = workdir / "recorder.parquet"
            recorder = Recorder(trace, trigger=TRIGGER)
            recorder.start()
            try:
                results["recorder"].append(ns_per_call(binary, args.calls))
            finally:
                recorder.stop()
                trace.unlink()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    base = statistics.median(results["none"])
    print("| attached | ns per getppid(2), median [min, max] | added (ns) |")
    print("|---|---|---|")
    for name, values in results.items():
        median = statistics.median(values)
        print(
            f"| {name} | {median:.1f} [{min(values):.1f}, {max(values):.1f}] "
            f"| {median - base:.1f} |"
        )
    print(
        f"\n{shared} of {args.rounds} rounds began with other processes' "
        "tracepoint programs attached."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
