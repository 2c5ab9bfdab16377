"""``syslrn report``: figures and an HTML page that show what a model learned."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

from syslrn.commands._learning import add_table_options, model_features, table_options
from syslrn.errors import SyslrnError
from syslrn.evaluate.runs import Run, RunSet, load_graph, require_requests, resolve_runs
from syslrn.paths import check_parent_writable
from syslrn.text import format_count


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
        help="directory to write the report into; it is created if missing, "
        "but its parent directory must exist",
    )
    parser.add_argument(
        "--graph-run",
        metavar="NAME",
        help="run whose system graph is drawn, as a trace path or the id of a run "
        "in a campaign directory (default: the first RUN; for a campaign "
        "directory, its first workload run by id)",
    )
    add_table_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from syslrn.evaluate.report import ReportRun, write_report
    from syslrn.model import load_model

    out_dir = check_output_dir(args.output)
    model = load_model(args.model)

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
        chosen = graph_run(args.graph_run, args.runs, runset, runs)
        if chosen is not None:
            graph = load_graph(chosen)
    elif args.graph_run is not None:
        raise SyslrnError("--graph-run needs runs to choose from; give RUN arguments")

    index = write_report(
        model, out_dir, report_runs, graph, title=f"syslrn model {args.model}"
    )
    figures = len(list(out_dir.glob("*.png")))
    drawn = f", system graph of {graph.name}" if graph is not None else ""
    print(f"report written to {index} ({format_count(figures, 'figure')}{drawn})")
    return 0


def check_output_dir(path: str | os.PathLike) -> Path:
    """Check that the report directory exists or can be created in its parent.

    Raises
    ------
    SyslrnError
        ``path`` is not a directory, or its parent is missing or not
        writable. Creating missing parents could hide a mistyped path.
    """
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise SyslrnError(
                f"output {path}: exists and is not a directory; give a directory name"
            )
        if not os.access(path, os.W_OK | os.X_OK):
            raise SyslrnError(
                f"output {path}: directory is not writable; choose another output path"
            )
        return path
    check_parent_writable(path)
    return path


def graph_run(
    name: str | None, inputs: Sequence[str], runset: RunSet, runs: Sequence[Run]
) -> Run | None:
    """Return the run whose system graph the report draws.

    With ``name``, that is the run of that name or trace path, from any
    phase. Without it, it is the first judged run of the first input that
    has one, in the order of ``inputs``, because ``runs`` is sorted by name.
    Returns None for a feature table, which has no graphs, and when no
    input has a judged run.

    Raises
    ------
    SyslrnError
        ``name`` matches no run or runs of several traces, or the runs are
        a table.
    """
    if runset.kind == "table":
        if name is not None:
            raise SyslrnError(
                "--graph-run: a feature table has no system graphs; leave the "
                "option out or give traces"
            )
        return None
    if name is None:
        for item in inputs:
            input_path = Path(item)
            for r in runs:
                if input_path in (r.path, r.campaign):
                    return r
        return None

    requested_path = Path(name).resolve()
    matches = [
        r
        for r in runset.runs
        if r.name == name or (r.path is not None and r.path.resolve() == requested_path)
    ]
    if not matches:
        names = ", ".join(r.name for r in runset.runs[:5])
        more = ", ..." if len(runset.runs) > 5 else ""
        raise SyslrnError(
            f"--graph-run {name}: no such run among the inputs; give one of "
            f"{names}{more}"
        )
    if len({r.path.resolve() for r in matches if r.path is not None}) > 1:
        raise SyslrnError(
            f"--graph-run {name}: {len(matches)} runs have this name (traces "
            f"{', '.join(str(r.path) for r in matches)}); give the trace path instead"
        )
    return matches[0]
