"""The end-to-end demo: campaign, training, plan, and the online monitor on
one normal and one faulty run of a real server.

Every step runs the same code as the corresponding command, and prints what
that command prints, so the demo doubles as a tour of the tool.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from syslrn.cli import main as syslrn_main
from syslrn.collect.trigger import parse_trigger
from syslrn.errors import SyslrnError
from syslrn.evaluate.campaign import CampaignRunner
from syslrn.evaluate.dataset import make_private_dir
from syslrn.evaluate.plan import CampaignParams
from syslrn.model.file import load_model
from syslrn.monitor.online import Monitor, Verdict
from syslrn.scenarios import get_scenario
from syslrn.text import format_count

log = logging.getLogger(__name__)

DEFAULT_SCENARIO = "postgres"
# The helper that every PostgreSQL session runs fails, so each request
# loses one child process: a fault that only the process graph shows.
DEFAULT_FAULTS = {
    "postgres": "helper-fails",
    "postfix": "helper-fails",
    "ssh": "command-fails",
}
MONITOR_REQUESTS = 4


@dataclass
class DemoResult:
    kept: int
    total: int
    normal: Verdict | None
    faulty: Verdict | None
    fault: str

    @property
    def passed(self) -> bool:
        return (
            self.normal is not None
            and not self.normal.anomalous
            and self.faulty is not None
            and self.faulty.anomalous
        )

    def summary(self) -> str:
        normal = "normal" if self.normal and not self.normal.anomalous else "ANOMALOUS"
        if self.faulty is None:
            faulty = "no window"
        elif self.faulty.anomalous:
            names = ", ".join(c.feature for c in self.faulty.detection.deviating())
            faulty = f"anomalous ({names})"
        else:
            faulty = "missed"
        verdict = "ok" if self.passed else "FAILED"
        return (
            f"syslrn demo {verdict}: kept {self.kept} of "
            f"{format_count(self.total, 'feature')}; "
            f"normal run {normal}; run with fault {self.fault} {faulty}"
        )


def _step(out: TextIO, title: str) -> None:
    print(f"\n== {title}", file=out, flush=True)


def _run_command(argv: list[str]) -> None:
    status = syslrn_main(argv)
    if status not in (0, None):
        raise SyslrnError(f"demo step 'syslrn {' '.join(argv)}' exited with {status}")


def run_demo(
    directory: str | Path,
    scenario: str = DEFAULT_SCENARIO,
    runs: int = 16,
    sizes: tuple[int, ...] = (1, 2, 3, 4),
    fault: str | None = None,
    seed: int = 0,
    out: TextIO | None = None,
    progress_factory=None,
) -> DemoResult:
    """Run the demo into ``directory``; return the verdicts of the online runs."""
    import sys

    out = out or sys.stdout
    directory = make_private_dir(Path(directory))
    campaign_dir = directory / "campaign"
    model_path = directory / "model.json"
    fault = fault or DEFAULT_FAULTS.get(scenario)

    _step(
        out,
        f"1. campaign: {format_count(runs, 'workload run')} of {scenario} "
        f"(sizes {sizes})",
    )
    params = CampaignParams(
        runs=runs, sizes=sizes, fault_ratio=0.25, seed=seed, startup_runs=1, idle_runs=1
    )
    existing = (campaign_dir / "campaign.json").exists()
    summary = CampaignRunner(
        scenario,
        campaign_dir,
        None if existing else params,
        progress_factory=progress_factory,
    ).run()
    print(
        f"{format_count(summary.total, 'experiment')} ({summary.skipped} already "
        f"done), {format_count(summary.failures, 'failure run')}, "
        f"{format_count(summary.errors, 'error')}",
        file=out,
    )

    _step(out, "2. train on the failure-free runs")
    _run_command(["train", str(campaign_dir), "-o", str(model_path), "--top", "20"])
    model = load_model(model_path)
    kept = sum(1 for f in model.features if f.kept)

    _step(out, "3. plan the probes")
    _run_command(["plan", str(model_path), "--save"])
    model = load_model(model_path)

    _step(
        out,
        f"4. monitor online: {MONITOR_REQUESTS} requests, then "
        f"{MONITOR_REQUESTS} with fault {fault}",
    )
    normal, faulty = _monitor_runs(model, scenario, fault, out)
    result = DemoResult(
        kept=kept, total=len(model.features), normal=normal, faulty=faulty, fault=fault
    )
    print("", file=out)
    print(result.summary(), file=out, flush=True)
    return result


def _monitor_runs(model, scenario_name: str, fault_name: str, out: TextIO):
    workdir = Path(tempfile.mkdtemp(prefix=f"syslrn-demo-{scenario_name}-"))
    workdir.chmod(0o711)
    scenario = get_scenario(scenario_name, workdir)
    faults = scenario.faults()
    if fault_name not in faults:
        raise SyslrnError(
            f"scenario {scenario_name} has no fault {fault_name!r}; "
            f"choose one of {', '.join(sorted(faults))}"
        )
    scenario.setup()
    try:
        scenario.check()
        monitor = Monitor(
            model,
            parse_trigger(scenario.trigger),
            poll_s=0.1,
            on_verdict=lambda v: print(f"  {v.human()}", file=out, flush=True),
        )
        stop = threading.Event()
        thread = threading.Thread(target=monitor.run, args=(stop,), daemon=True)
        thread.start()
        if not monitor.started.wait(60):
            raise SyslrnError("the monitor did not start within 60 s")
        settle = monitor.quiet_s + 0.5
        try:
            result = scenario.run_workload(MONITOR_REQUESTS)
            print(
                f"  normal run: {format_count(result.requests, 'request')}, "
                f"{format_count(result.errors, 'error')}",
                file=out,
            )
            time.sleep(settle)
            fault = faults[fault_name]
            fault.apply()
            try:
                result = scenario.run_workload(MONITOR_REQUESTS)
                print(
                    f"  run with {fault_name}: "
                    f"{format_count(result.requests, 'request')}, "
                    f"{format_count(result.errors, 'error')}",
                    file=out,
                )
                time.sleep(settle)
            finally:
                fault.revert()
        finally:
            stop.set()
            thread.join(30)
        verdicts = monitor.verdicts
        normal = verdicts[0] if verdicts else None
        faulty = verdicts[1] if len(verdicts) > 1 else None
        if len(verdicts) > 2:
            log.warning("the monitor saw %d windows, expected 2", len(verdicts))
        return normal, faulty
    finally:
        scenario.teardown()
        shutil.rmtree(workdir, ignore_errors=True)
