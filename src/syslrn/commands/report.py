"""``syslrn report``: figures and an HTML page that show what a model learned."""

from __future__ import annotations

import argparse
from pathlib import Path

from syslrn.commands._learning import add_table_options, model_features, table_options
from syslrn.errors import SyslrnError
from syslrn.evaluate.runs import load_graph, require_requests, resolve_runs


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        help="draw a model's features and a run's system graph into an HTML report",
        description=(
            "For each kept feature, plot its value against requests with the fitted "
            "line and tolerance band, showing the training runs and the runs given "
            "(coloured by verdict). Also chart the R^2 of every feature, draw one "
            "run's system graph with node types coloured by class, and write "
            "index.html."
        ),
    )
    parser.add_argument(
        "model", metavar="MODEL", help="model file written by syslrn train"
    )
    parser.add_argument(
        "runs",
        nargs="*",
        metavar="RUN",
        help="runs to plot and judge (traces, campaign directories, or "
        "one feature table)",
    )
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="DIR",
        help="directory to write the report into",
    )
    parser.add_argument(
        "--graph-run",
        metavar="NAME",
        help="run whose system graph is drawn (default: the first trace)",
    )
    add_table_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from syslrn.evaluate.report import ReportRun, write_report
    from syslrn.model import load_model

    model = load_model(args.model)
    out_dir = Path(args.output)
    if out_dir.exists() and not out_dir.is_dir():
        raise SyslrnError(f"output {out_dir}: exists and is not a directory")

    report_runs = []
    graph = None
    if args.runs:
        runset = resolve_runs(args.runs, table_options(args))
        runs = [r for r in runset.runs if r.campaign is None or r.is_experiment]
        rows = model_features(model, runset, runs, args.model)
        require_requests(runs)
        report_runs = [
            ReportRun(r.name, r.requests, row, model.detect(row, r.requests))
            for r, row in zip(runs, rows, strict=True)
        ]
        if runset.kind == "traces":
            chosen = runs[0]
            if args.graph_run is not None:
                chosen = next(
                    (r for r in runset.runs if r.name == args.graph_run), None
                )
                if chosen is None:
                    raise SyslrnError(
                        f"--graph-run {args.graph_run}: no such run among the inputs"
                    )
            graph = load_graph(chosen)
    elif args.graph_run is not None:
        raise SyslrnError("--graph-run needs runs to choose from; give RUN arguments")

    index = write_report(
        model, out_dir, report_runs, graph, title=f"syslrn model {args.model}"
    )
    figures = len(list(out_dir.glob("*.png")))
    print(f"report written to {index} ({figures} figures)")
    return 0
