"""``syslrn trace``: inspect and repair trace files."""

from __future__ import annotations

import argparse
import json

from syslrn.trace import read_trace, recover
from syslrn.trace.summary import format_summary, summarize


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "trace",
        help="inspect and repair trace files",
        description=(
            "Inspect and repair trace files: 'show' prints a summary of a trace, "
            "and 'recover' turns the journal of an interrupted recording into a "
            "trace file."
        ),
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True

    show = actions.add_parser(
        "show",
        help="print a summary of a trace",
        description=(
            "Print a trace's host, duration and labels, its events by kind, its "
            "processes, the executables started most often with their parents, "
            "its connections, its request count and its lost events. A trace "
            "whose recording was interrupted is read from its journal."
        ),
    )
    show.add_argument("path", metavar="TRACE", help="trace file (.parquet)")
    show.add_argument(
        "--top",
        type=int,
        default=10,
        metavar="N",
        help="number of executables to list (default: %(default)s)",
    )
    show.add_argument("--json", action="store_true", help="print JSON for programs")
    show.set_defaults(func=run_show)

    fix = actions.add_parser(
        "recover",
        help="finish the trace of an interrupted recording from its journal",
        description=(
            "Write the trace file of a recording that stopped before it could "
            "finish, for example because it was killed, from the journal "
            "TRACE.journal that it left. The trace is marked incomplete and "
            "recovered, and the journal is removed."
        ),
    )
    fix.add_argument(
        "path", metavar="TRACE", help="trace file whose TRACE.journal is left"
    )
    fix.set_defaults(func=run_recover)


def run_show(args: argparse.Namespace) -> int:
    summary = summarize(read_trace(args.path))
    if args.json:
        document = {
            "path": summary.path,
            "complete": bool(summary.meta.get("complete")),
            "host": summary.meta.get("host"),
            "duration_s": summary.duration_s,
            "labels": summary.meta.get("labels") or {},
            "events": summary.events_by_kind,
            "processes": len(summary.processes),
            "executables": dict(summary.executables().most_common(args.top)),
            "connections": summary.connections,
            "requests": summary.meta.get("requests"),
            "lost": summary.meta.get("lost"),
        }
        print(json.dumps(document, indent=2))
    else:
        print(format_summary(summary, top=args.top))
    return 0


def run_recover(args: argparse.Namespace) -> int:
    path = recover(args.path)
    print(f"recovered {path}")
    return 0
