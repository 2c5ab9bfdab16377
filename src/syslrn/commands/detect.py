"""``syslrn detect``: judge runs against a trained model."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from syslrn.commands._learning import (
    add_table_options,
    format_number,
    format_table,
    model_features,
    table_options,
)
from syslrn.evaluate.runs import require_requests, resolve_runs
from syslrn.text import format_count

if TYPE_CHECKING:
    from syslrn.model import Detection


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "detect",
        help="flag runs whose kept features deviate from a model",
        description=(
            "Embed each run as the model's embedding does and compare every kept "
            "feature with its expected value for the run's request count. Exit "
            "status: 0 when every run is normal, 1 when one is anomalous, 2 on "
            "invalid input."
        ),
    )
    parser.add_argument(
        "model", metavar="MODEL", help="model file written by syslrn train"
    )
    parser.add_argument(
        "runs",
        nargs="+",
        metavar="RUN",
        help="trace files, campaign directories, or one feature table",
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON document for programs"
    )
    add_table_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from syslrn.model.file import load_model, require_kept_features

    model = load_model(args.model)
    require_kept_features(model, args.model)
    runset = resolve_runs(args.runs, table_options(args))
    # A campaign directory also lists its startup and idle runs; only the
    # workload runs are judged. Files named one by one are judged as given.
    runs = [r for r in runset.runs if r.campaign is None or r.is_experiment]
    rows = model_features(model, runset, runs, args.model)
    require_requests(runs)
    detections = [
        model.detect(row, r.requests) for r, row in zip(runs, rows, strict=True)
    ]

    if args.json:
        document = {
            "model": args.model,
            "runs": [
                {"run": r.name, **d.to_dict()}
                for r, d in zip(runs, detections, strict=True)
            ],
        }
        print(json.dumps(document, indent=2, allow_nan=False))
    else:
        for r, d in zip(runs, detections, strict=True):
            print(format_detection(r.name, d))
    return 1 if any(d.anomalous for d in detections) else 0


def format_detection(name: str, detection: Detection) -> str:
    """Describe one run's verdict, with a table of its deviating features."""
    deviating = detection.deviating()
    verdict = "ANOMALOUS" if deviating else "normal"
    lines = [
        f"{name}: {verdict} ({format_count(detection.requests, 'request')}, "
        f"{len(deviating)} of {format_count(len(detection.features), 'kept feature')} "
        "outside tolerance)"
    ]
    if deviating:
        rows = [
            [
                c.feature,
                format_number(c.observed, 2),
                format_number(c.expected, 2),
                format_number(c.tolerance, 2),
                format_number(c.deviation, 2),
            ]
            for c in deviating
        ]
        table = format_table(
            ["feature", "observed", "expected", "tolerance", "deviation"],
            rows,
            right=[False, True, True, True, True],
        )
        lines.extend("    " + line for line in table.splitlines())
    lines.extend(f"    note: {note}" for note in detection.notes)
    return "\n".join(lines)
