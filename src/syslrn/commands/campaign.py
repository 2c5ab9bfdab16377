"""``syslrn campaign``: record a labelled campaign of a scenario."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from syslrn.errors import CampaignError
from syslrn.evaluate.campaign import CampaignRunner
from syslrn.evaluate.dataset import CAMPAIGN_FILE, read_campaign
from syslrn.evaluate.plan import (
    DEFAULT_FAULT_RATIO,
    DEFAULT_IDLE_RUNS,
    DEFAULT_IDLE_SECONDS,
    DEFAULT_SIZES,
    DEFAULT_STARTUP_RUNS,
    CampaignParams,
)
from syslrn.evaluate.progress import ProgressBar
from syslrn.scenarios import SCENARIOS
from syslrn.text import format_count


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "campaign",
        help="record a labelled campaign of experiments on a scenario",
        description=(
            "Run experiments on a real application: each records a trace while "
            "the scenario starts (startup), idles (idle) or serves a workload of "
            "a given size with no fault or one fault (workload), and stores the "
            "trace, the application's logs and the labels in its own directory. "
            "Running the command again on the same directory resumes the "
            "campaign; options left out take the stored values."
        ),
    )
    parser.add_argument("scenario", choices=sorted(SCENARIOS), help="scenario to drive")
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="DIR",
        help="campaign directory, created with mode 0700 (resumed if it exists)",
    )
    parser.add_argument(
        "--runs",
        type=int,
        metavar="N",
        help="number of workload experiments (required for a new campaign)",
    )
    parser.add_argument(
        "--sizes",
        type=_sizes,
        metavar="N,N,...",
        help="workload sizes in requests per experiment "
        f"(default {','.join(map(str, DEFAULT_SIZES))})",
    )
    parser.add_argument(
        "--fault-ratio",
        type=float,
        metavar="F",
        help=f"fraction of workload experiments with a fault (default {DEFAULT_FAULT_RATIO})",
    )
    parser.add_argument("--seed", type=int, help="seed of the plan's draws (default 0)")
    parser.add_argument(
        "--startup-runs",
        type=int,
        metavar="N",
        help=f"experiments that record the servers starting (default {DEFAULT_STARTUP_RUNS})",
    )
    parser.add_argument(
        "--idle-runs",
        type=int,
        metavar="N",
        help=f"experiments that record the servers idle (default {DEFAULT_IDLE_RUNS})",
    )
    parser.add_argument(
        "--idle-seconds",
        type=float,
        metavar="S",
        help=f"length of an idle recording in seconds (default {DEFAULT_IDLE_SECONDS})",
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="do not draw the progress bar"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    params = _params(args)
    progress_factory = None
    if not args.no_progress:

        def progress_factory(total: int, done: int) -> ProgressBar:
            return ProgressBar(total, done, stream=sys.stderr)

    runner = CampaignRunner(
        args.scenario, args.output, params, progress_factory=progress_factory
    )
    summary = runner.run()
    print(
        f"{args.output}: {format_count(summary.finished, 'experiment')} run, "
        f"{summary.skipped} already done, {summary.total} planned; "
        f"{format_count(summary.failures, 'failure run')}, "
        f"{format_count(summary.errors, 'error')}"
    )
    return 1 if summary.errors else 0


def _params(args: argparse.Namespace) -> CampaignParams | None:
    """Build the parameters from the options, the stored ones filling gaps.

    Returns None to resume an existing campaign with its stored parameters
    when no option is given.
    """
    given = {
        "runs": args.runs,
        "sizes": args.sizes,
        "fault_ratio": args.fault_ratio,
        "seed": args.seed,
        "startup_runs": args.startup_runs,
        "idle_runs": args.idle_runs,
        "idle_seconds": args.idle_seconds,
    }
    given = {name: value for name, value in given.items() if value is not None}
    if not given:
        return None

    stored = {}
    if (Path(args.output) / CAMPAIGN_FILE).exists():
        stored = read_campaign(args.output).get("params", {})
    merged = {**stored, **given}
    if "runs" not in merged:
        raise CampaignError(f"{args.output}: give --runs to start a new campaign")
    return CampaignParams(**merged)


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give comma-separated integers, e.g. 1,2,4,8"
        ) from None
    return sizes
