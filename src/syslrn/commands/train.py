"""``syslrn train``: learn which features follow the workload."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import TYPE_CHECKING, Any

from syslrn.commands._learning import (
    TABLE_EMBEDDING,
    add_learning_options,
    add_table_options,
    build_embedding,
    build_estimator,
    describe_for,
    feature_rows,
    format_number,
    format_table,
    table_options,
)
from syslrn.errors import SyslrnError
from syslrn.evaluate.runs import Run, RunSet, load_graph, require_requests, resolve_runs
from syslrn.monitor.plan import COMM_MAX
from syslrn.text import format_count
from syslrn.trace.io import check_not_input

if TYPE_CHECKING:
    from syslrn.model import Model

log = logging.getLogger(__name__)

#: Minimum number of training runs: a line through two runs leaves no
#: residual to judge the fit by.
MIN_TRAINING_RUNS = 3


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="learn a normal-behaviour model from recorded runs",
        description=(
            "Build one system graph per run, embed it, fit each feature against "
            "the run's request count, and keep the features whose fit reaches the "
            "R^2 threshold. Trains on the failure-free workload runs, while runs "
            "labelled phase=startup or phase=idle class the node types."
        ),
    )
    parser.add_argument(
        "runs",
        nargs="+",
        metavar="RUN",
        help="trace files, campaign directories, or one feature table",
    )
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="MODEL",
        help="model file to write (JSON)",
    )
    parser.add_argument(
        "--top",
        type=int,
        metavar="N",
        help="list every kept feature but only the N best rejected ones "
        "(default: list all)",
    )
    add_learning_options(parser)
    add_table_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from syslrn.model import save_model, train_model

    check_not_input(args.output, args.runs)
    runset = resolve_runs(args.runs, table_options(args))
    estimator = build_estimator(args.model, args)
    embedding = (
        None if runset.kind == "table" else build_embedding(args.embedding, args)
    )

    experiments = runset.experiments()
    training = [r for r in experiments if not r.failure]
    skipped = len(experiments) - len(training)
    if skipped:
        print(
            f"leaving out {format_count(skipped, 'failure run')}: a model learns "
            "failure-free runs only"
        )
    if len(training) < MIN_TRAINING_RUNS:
        raise SyslrnError(
            f"{format_count(len(training), 'failure-free workload run')} given; "
            "train needs at least "
            f"{MIN_TRAINING_RUNS} to judge a fit"
        )

    rows = feature_rows(runset, training, embedding)
    require_requests(training)
    if embedding is None:
        spec = {"name": TABLE_EMBEDDING, "params": {"source": str(training[0].path)}}
    else:
        spec = {"name": embedding.name, "params": embedding.get_params()}
    model = train_model(
        rows,
        [r.requests for r in training],
        estimator=estimator,
        embedding=spec,
        describe=describe_for(runset, embedding),
        training=_training_facts(training, embedding),
    )
    model.training["classes"] = _classes(model, runset, embedding)
    _warn_of_shared_comm_prefixes(model)

    print(format_features(model, top_rejected=args.top))
    print()
    print(summary(model, estimator))
    if not model.kept_features:
        print(
            f"syslrn: no feature was kept; no model written to {args.output}",
            file=sys.stderr,
        )
        return 1
    save_model(model, args.output)
    print(f"model written to {args.output}")
    return 0


def _training_facts(runs: list[Run], embedding) -> dict[str, Any]:
    triggers = sorted({r.trigger for r in runs if r.trigger})
    if len(triggers) > 1:
        log.warning(
            "training runs name several triggers %s; the model stores none", triggers
        )
    gaps = [r.max_request_gap_s for r in runs if r.max_request_gap_s is not None]
    driven = any(r.graph is not None and r.graph.driven for r in runs)
    include_driver = bool(
        embedding is not None and embedding.get_params().get("include_driver")
    )
    return {
        "run_names": [r.name for r in runs],
        "trigger": triggers[0] if len(triggers) == 1 else None,
        "driver_excluded": driven and not include_driver,
        "durations_s": [r.duration_s for r in runs],
        "quiet_gap_s": max(gaps) if gaps else None,
    }


def _warn_of_shared_comm_prefixes(model: Model) -> None:
    """Log a warning for kept node types that share their first COMM_MAX bytes.

    The kernel cuts a process's comm to COMM_MAX bytes, and the online
    monitor distinguishes node types by comm only.
    """
    by_prefix: dict[bytes, list[str]] = {}
    kept_types = sorted({f.node_type for f in model.kept_features if f.node_type})
    for node_type in kept_types:
        prefix = node_type.encode()[:COMM_MAX]
        by_prefix.setdefault(prefix, []).append(node_type)
    for prefix, node_types in by_prefix.items():
        if len(node_types) > 1:
            log.warning(
                "kept node types %s share the %d-byte prefix %r, which is all of "
                "their comm that the kernel keeps, so the online monitor cannot "
                "tell them apart (syslrn detect can)",
                " and ".join(repr(t) for t in node_types),
                COMM_MAX,
                prefix.decode(errors="replace"),
            )


def _classes(model: Model, runset: RunSet, embedding) -> dict[str, str]:
    from syslrn.model.classes import PHASES, WORKLOAD_DRIVEN, classify_node_types

    driven_types = {f.node_type for f in model.kept_features if f.node_type}
    if runset.kind == "table" or embedding is None:
        return {t: WORKLOAD_DRIVEN for t in sorted(driven_types)}
    graphs: dict[str, list] = {p: [] for p in PHASES}
    for r in runset.runs:
        phase = r.phase if r.phase in PHASES else "workload"
        if phase != "workload" or (r.is_experiment and not r.failure):
            graphs[phase].append(load_graph(r))
    include_driver = bool(embedding.get_params().get("include_driver"))
    return classify_node_types(graphs, driven_types, include_driver=include_driver)


def format_features(model: Model, top_rejected: int | None = None) -> str:
    """Lay out the features of a model, kept ones first, as a table.

    With ``top_rejected``, only that many rejected features are listed, the
    best fits first, and a last line counts the others.
    """
    ordered = sorted(
        model.features,
        key=lambda f: (not f.kept, -(f.r2 if f.r2 is not None else -1), f.name),
    )
    hidden = 0
    if top_rejected is not None:
        kept = [f for f in ordered if f.kept]
        rejected = [f for f in ordered if not f.kept]
        hidden = max(len(rejected) - top_rejected, 0)
        ordered = kept + rejected[:top_rejected]
    rows = [
        [
            f.name,
            "kept" if f.kept else "rejected",
            format_number(f.r2),
            format_number(f.slope),
            format_number(f.intercept),
            format_number(f.tolerance),
            f.reason or "",
        ]
        for f in ordered
    ]
    headers = ["feature", "status", "R^2", "slope", "intercept", "tolerance", "reason"]
    table = format_table(
        headers, rows, right=[False, False, True, True, True, True, False]
    )
    if hidden:
        more = format_count(hidden, "more rejected feature")
        table += f"\n... and {more} (list them without --top)"
    return table


def summary(model: Model, estimator) -> str:
    """Say what was kept, and what the fixed-workload case did when it applies."""
    kept, total, runs = (
        len(model.kept_features),
        len(model.features),
        model.training["runs"],
    )
    if model.degenerate:
        fixed = model.training.get("fixed_requests")
        location = "median" if estimator.name == "huber" else "mean"
        verb = "is" if kept == 1 else "are"
        return (
            f"all {format_count(runs, 'training run')} had "
            f"{format_count(fixed, 'request')} (a fixed workload), so no line can "
            f"be fitted: each feature is expected at its training {location}, and "
            f"the {kept} of {format_count(total, 'feature')} whose spread is at "
            f"most {estimator.stable_cv:g} of it {verb} kept; detection is valid "
            "for runs of that request count"
        )
    return (
        f"kept {kept} of {format_count(total, 'feature')} with R^2 >= "
        f"{estimator.r2_threshold:g}, from {format_count(runs, 'training run')}"
    )
