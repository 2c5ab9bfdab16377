"""``syslrn evaluate``: cross-validate embeddings and models on labelled runs."""

from __future__ import annotations

import argparse
import json
import logging
from typing import TYPE_CHECKING

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
    split_names,
    table_options,
)
from syslrn.commands.train import MIN_TRAINING_RUNS
from syslrn.errors import SyslrnError
from syslrn.evaluate.runs import require_requests, resolve_runs
from syslrn.text import format_count

if TYPE_CHECKING:
    from syslrn.evaluate.crossval import Evaluation

# The defaults of syslrn.evaluate.folds, which imports scikit-learn.
DEFAULT_FOLDS = 10
DEFAULT_SEED = 0

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="cross-validate detection on failure-free and failure runs",
        description=(
            "Split the failure-free workload runs into k folds. Each fold trains on "
            "the others and tests on its own runs plus every failure run. Reports "
            "recall (failure runs flagged) and selectivity (failure-free runs "
            "passed), precision and F1, overall and per fault. Several embeddings "
            "and models are compared on the same folds."
        ),
    )
    parser.add_argument(
        "runs",
        nargs="+",
        metavar="RUN",
        help="a campaign directory, trace files with a fault label, or "
        "one feature table",
    )
    parser.add_argument(
        "-k",
        "--folds",
        type=int,
        default=DEFAULT_FOLDS,
        metavar="K",
        help="number of folds (default: %(default)s)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=DEFAULT_SEED,
        help="seed of the fold shuffle (default: %(default)s)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON document for programs"
    )
    add_learning_options(parser, several=True)
    add_table_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from syslrn.evaluate.crossval import cross_validate
    from syslrn.evaluate.folds import make_folds

    runset = resolve_runs(args.runs, table_options(args))
    experiments = runset.experiments()
    if not experiments:
        raise SyslrnError("no workload runs among the inputs; nothing to evaluate")
    is_failure = [r.failure for r in experiments]
    try:
        folds = make_folds(is_failure, n_folds=args.folds, seed=args.seed)
    except ValueError as exc:
        raise SyslrnError(str(exc)) from None
    smallest = min(len(f.train) for f in folds)
    if smallest < MIN_TRAINING_RUNS:
        raise SyslrnError(
            f"with {args.folds} folds a fold trains on only "
            f"{format_count(smallest, 'run')}; give more "
            f"failure-free runs or fewer folds (each fold needs {MIN_TRAINING_RUNS})"
        )

    model_names = split_names(args.model)
    estimators = {name: build_estimator(name, args) for name in model_names}
    if runset.kind == "table":
        if args.embedding != "bag-of-nodes":
            raise SyslrnError(
                "a feature table carries its own features; --embedding "
                "applies to traces only"
            )
        embeddings = {TABLE_EMBEDDING: None}
    else:
        embeddings = {
            name: build_embedding(name, args) for name in split_names(args.embedding)
        }

    evaluations = []
    for name, embedding in embeddings.items():
        rows = feature_rows(runset, experiments, embedding)
        require_requests(experiments)
        spec = {
            "name": name,
            "params": embedding.get_params() if embedding is not None else {},
        }
        for model_name, estimator in estimators.items():
            log.info("evaluating %s with %s on %d folds", name, model_name, len(folds))
            evaluations.append(
                cross_validate(
                    rows,
                    [r.requests for r in experiments],
                    is_failure,
                    [r.fault for r in experiments],
                    folds,
                    embedding=spec,
                    describe=describe_for(runset, embedding),
                    make_estimator=lambda e=estimator: _fresh(e),
                )
            )

    n_failure = sum(is_failure)
    if args.json:
        print(
            json.dumps(
                {
                    "folds": len(folds),
                    "seed": args.seed,
                    "experiments": len(experiments),
                    "failure_free": len(experiments) - n_failure,
                    "failure": n_failure,
                    "results": [e.to_dict() for e in evaluations],
                },
                indent=2,
                allow_nan=False,
            )
        )
        return 0
    print(
        f"{format_count(len(experiments), 'workload run')} "
        f"({len(experiments) - n_failure} failure-free, "
        f"{n_failure} failure), {len(folds)} folds, seed {args.seed}"
    )
    print()
    print(format_results(evaluations))
    faults = format_faults(evaluations)
    if faults:
        print()
        print(faults)
    for evaluation in evaluations:
        for note in evaluation.notes:
            print(f"note: {evaluation.embedding}/{evaluation.model}: {note}")
    return 0


def _fresh(estimator):
    return type(estimator)(**estimator.get_params())


def format_results(evaluations: list[Evaluation]) -> str:
    """Lay out the mean (and standard deviation) of each metric over folds."""
    rows = []
    for e in evaluations:
        mean, spread = e.summary(), e.spread()
        cells = [
            f"{format_number(mean[m])} ± {format_number(spread[m])}"
            for m in ("recall", "selectivity", "precision", "f1")
        ]
        rows.append([e.embedding, e.model, *cells])
    return format_table(
        ["embedding", "model", "recall", "selectivity", "precision", "F1"],
        rows,
        right=[False, False, True, True, True, True],
    )


def format_faults(evaluations: list[Evaluation]) -> str:
    """Lay out the recall of each fault, one column per combination."""
    per_fault = [e.per_fault() for e in evaluations]
    faults = sorted({f for table in per_fault for f in table})
    if not faults:
        return ""
    headers = ["fault", "runs"] + [
        f"recall {e.embedding}/{e.model}" for e in evaluations
    ]
    rows = []
    for fault in faults:
        runs = next(t[fault]["runs"] for t in per_fault if fault in t)
        rows.append(
            [fault, str(runs)]
            + [format_number(t.get(fault, {}).get("recall")) for t in per_fault]
        )
    return format_table(headers, rows, right=[False] + [True] * (len(headers) - 1))
