"""``syslrn demo``: the whole pipeline on a real server, in a few minutes."""

from __future__ import annotations

import argparse
import sys

from syslrn.evaluate.demo import DEFAULT_SCENARIO, run_demo
from syslrn.evaluate.progress import ProgressBar
from syslrn.scenarios import SCENARIOS


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the end-to-end demo on a real server",
        description=(
            "Record a short labelled campaign of a real server, train a model on "
            "its failure-free runs, plan the probes, then monitor one normal and "
            "one faulty run online and print the verdicts."
        ),
    )
    parser.add_argument(
        "-o",
        "--output",
        default="demo-out",
        metavar="DIR",
        help="directory for the campaign and the model "
        "(default: %(default)s; an existing campaign is resumed)",
    )
    parser.add_argument(
        "--scenario",
        choices=sorted(SCENARIOS),
        default=DEFAULT_SCENARIO,
        help="server to run (default: %(default)s)",
    )
    parser.add_argument(
        "--runs",
        type=int,
        default=16,
        help="workload experiments of the campaign (default: %(default)s)",
    )
    parser.add_argument(
        "--fault",
        help="fault of the online faulty run (default: the scenario's helper failure)",
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="hide the progress bar"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    progress = None if args.no_progress else ProgressBar
    result = run_demo(
        args.output,
        scenario=args.scenario,
        runs=args.runs,
        fault=args.fault,
        progress_factory=progress,
    )
    if result.normal is not None and result.normal.anomalous:
        # The usual cause on a shared host, since the monitor counts by name.
        print(
            "syslrn demo: the monitor counts every process on the host whose "
            "name is a kept node type; if other jobs ran such processes during "
            "the normal run, run the demo again when the host is quiet",
            file=sys.stderr,
        )
    return 0 if result.passed else 1
