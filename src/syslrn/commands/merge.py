"""``syslrn merge``: join the traces that several hosts recorded of one run."""

from __future__ import annotations

import argparse

from syslrn.graph.merge import merge_traces
from syslrn.trace.io import check_not_input, check_writable, read_trace, write_trace


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "merge",
        help="merge the traces of one run recorded on several hosts",
        description=(
            "Concatenate the events of traces recorded on distinct hosts during the "
            "same run, so that one system graph joins the two ends of connections "
            "between the hosts. Labels must agree; request counts add up."
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
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_writable(args.output)
    check_not_input(args.output, args.traces)
    traces = [read_trace(path) for path in args.traces]
    table, meta = merge_traces(traces)
    write_trace(args.output, table, meta)
    print(
        f"merged {len(traces)} traces ({table.num_rows} events, hosts "
        f"{', '.join(meta['hosts'])}) into {args.output}"
    )
    return 0
