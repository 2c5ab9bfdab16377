"""``syslrn merge``: join the traces that several hosts recorded of one run."""

from __future__ import annotations

import argparse

from syslrn.commands._argtypes import non_negative_seconds
from syslrn.graph.merge import MAX_GAP_S, merge_traces
from syslrn.text import format_count
from syslrn.trace.io import check_not_input, check_writable, read_trace, write_trace


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "merge",
        help="merge the traces of one run recorded on several hosts",
        description=(
            "Concatenate the events of traces recorded on distinct hosts during the "
            "same run, so that one system graph joins the two ends of connections "
            "between the hosts. Labels must agree; request counts add up. The "
            "recordings should overlap in wall-clock time. Traces that do not are "
            "merged with a warning, unless they lie further apart than --max-gap, "
            "which rejects them. Traces without wall-clock times, such as those "
            "recorded by older versions, are merged with a warning and unchecked."
        ),
    )
    parser.add_argument("traces", nargs="+", metavar="TRACE", help="traces to merge")
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="TRACE",
        help="merged trace to write (Parquet)",
    )
    parser.add_argument(
        "--max-gap",
        type=non_negative_seconds,
        default=MAX_GAP_S,
        metavar="SECONDS",
        help="maximum wall-clock time from the end of one recording to the start "
        "of another; traces further apart are rejected, and closer ones that do "
        "not overlap get a warning (default: %(default)g; 0 rejects every gap)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_writable(args.output)
    check_not_input(args.output, args.traces)
    traces = [read_trace(path) for path in args.traces]
    table, meta = merge_traces(traces, max_gap_s=args.max_gap)
    write_trace(args.output, table, meta)
    print(
        f"merged {len(traces)} traces ({format_count(table.num_rows, 'event')}, hosts "
        f"{', '.join(meta['hosts'])}) into {args.output}"
    )
    return 0
