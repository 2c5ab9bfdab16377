"""Options and helpers shared by the train, detect, evaluate and report commands.

``syslrn`` builds the parser of every subcommand at each start, so these
modules import scikit-learn and matplotlib (seconds to import) only inside
the functions that run a command.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from syslrn.errors import ModelError, SyslrnError
from syslrn.evaluate.runs import NO_FAULT, Run, RunSet, TableOptions, load_graph

if TYPE_CHECKING:
    from syslrn.embed import GraphEmbedding
    from syslrn.model import Model
    from syslrn.model.base import NormalModel

#: Built-in embeddings and models, for the help text; the registries may
#: hold more.
BUILTIN_EMBEDDINGS = ("bag-of-nodes", "wl")
BUILTIN_MODELS = ("linear", "huber")

#: Embedding name stored in models trained on a feature table.
TABLE_EMBEDDING = "feature-table"


def add_table_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "feature tables (CSV, TSV or Parquet, one row per run)"
    )
    group.add_argument(
        "--request-column",
        default="requests",
        metavar="NAME",
        help="column with each run's request count (default: %(default)s)",
    )
    group.add_argument(
        "--label-column",
        default="label",
        metavar="NAME",
        help="column with each run's fault label (default: %(default)s)",
    )
    group.add_argument(
        "--normal-label",
        default=NO_FAULT,
        metavar="VALUE",
        help="label value of failure-free runs (default: %(default)s)",
    )
    group.add_argument(
        "--id-column",
        default="id",
        metavar="NAME",
        help="column that names each run (default: %(default)s; "
        "rows are numbered without it)",
    )


def table_options(args: argparse.Namespace) -> TableOptions:
    return TableOptions(
        request_column=args.request_column,
        label_column=args.label_column,
        normal_label=args.normal_label,
        id_column=args.id_column,
    )


def add_learning_options(
    parser: argparse.ArgumentParser, *, several: bool = False
) -> None:
    """Add the embedding and model choice, and their parameters."""
    if several:
        embedding_help = "embeddings of system graphs to compare, comma-separated"
        model_help = "normal-behaviour models to compare, comma-separated"
    else:
        embedding_help = "embedding of system graphs"
        model_help = "normal-behaviour model"
    parser.add_argument(
        "--embedding",
        default="bag-of-nodes",
        metavar="NAME",
        help=f"{embedding_help}: {', '.join(BUILTIN_EMBEDDINGS)} "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--model",
        default="linear",
        metavar="NAME",
        help=f"{model_help}: {', '.join(BUILTIN_MODELS)} (default: %(default)s)",
    )
    parser.add_argument(
        "--r2-threshold",
        type=float,
        default=None,
        metavar="R2",
        help="minimum R^2 of a kept feature (default: 0.9)",
    )
    parser.add_argument(
        "--tolerance-k",
        type=float,
        default=None,
        metavar="K",
        help="tolerance in units of the residual scale (default: 4)",
    )
    parser.add_argument(
        "--tolerance-floor",
        type=float,
        default=None,
        metavar="VALUE",
        help="minimum tolerance, in feature units (default: 1)",
    )
    parser.add_argument(
        "--include-driver",
        action="store_true",
        help="in driven runs, also count the workload driver's processes",
    )
    parser.add_argument(
        "--embedding-param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set an embedding parameter (repeatable)",
    )
    parser.add_argument(
        "--model-param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set a model parameter (repeatable)",
    )


def parse_params(items: Sequence[str], option: str) -> dict[str, Any]:
    """Parse ``NAME=VALUE`` items; values are JSON where they parse as JSON."""
    params: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise SyslrnError(f"{option} {item!r}: expected NAME=VALUE")
        try:
            params[name] = json.loads(text)
        except json.JSONDecodeError:
            params[name] = text
    return params


def embedding_params(args: argparse.Namespace) -> dict[str, Any]:
    params = parse_params(args.embedding_param, "--embedding-param")
    if args.include_driver:
        params["include_driver"] = True
    return params


def model_params(args: argparse.Namespace) -> dict[str, Any]:
    params = parse_params(args.model_param, "--model-param")
    for option, name in (
        ("r2_threshold", "r2_threshold"),
        ("tolerance_k", "tolerance_k"),
        ("tolerance_floor", "tolerance_floor"),
    ):
        value = getattr(args, option)
        if value is not None:
            params[name] = value
    return params


def split_names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise SyslrnError(f"{text!r}: give at least one name")
    return names


def build_embedding(name: str, args: argparse.Namespace) -> GraphEmbedding:
    from syslrn.embed import make_embedding

    embedding = make_embedding(name, embedding_params(args))
    _check_params(embedding, name)
    return embedding


def build_estimator(name: str, args: argparse.Namespace) -> NormalModel:
    from syslrn.model import make_model

    estimator = make_model(name, model_params(args))
    _check_params(estimator, name)
    return estimator


def _check_params(estimator, name: str) -> None:
    """Reject parameter values that the estimators would reject only when
    fitting, after every trace has been read."""
    params = estimator.get_params()
    threshold = params.get("r2_threshold")
    if threshold is not None and not _is_real(threshold, 0.0, 1.0):
        raise SyslrnError(
            f"{name}: R^2 threshold {threshold!r} must be a number within [0, 1]"
        )
    for key in ("tolerance_k", "tolerance_floor", "stable_cv", "epsilon"):
        if key in params and not _is_real(params[key], 0.0, math.inf):
            raise SyslrnError(
                f"{name}: {key}={params[key]!r} must be a number of 0 or more"
            )
    for key in ("iterations", "max_iter"):
        value = params.get(key)
        if key in params and (
            not isinstance(value, int) or isinstance(value, bool) or value < 0
        ):
            raise SyslrnError(
                f"{name}: {key}={value!r} must be a whole number of 0 or more"
            )


def _is_real(value: Any, low: float, high: float) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return low <= float(value) <= high


def feature_rows(
    runset: RunSet, runs: Sequence[Run], embedding: GraphEmbedding | None
) -> list[dict[str, float]]:
    """Return the features of each run: its table row, or its embedded graph."""
    if runset.kind == "table":
        return [dict(r.features or {}) for r in runs]
    assert embedding is not None
    return [embedding.features(load_graph(r)) for r in runs]


def model_features(
    model: Model, runset: RunSet, runs: Sequence[Run], source: str
) -> list[dict[str, float]]:
    """Return the features of each run as the model's embedding defines them.

    A feature table gives its columns as they are, so it must have every
    kept feature of the model as a column. ``source`` is the model file,
    which error messages name.
    """
    if runset.kind == "table":
        missing = [
            f.name for f in model.kept_features if f.name not in runset.feature_columns
        ]
        if missing:
            raise SyslrnError(
                f"feature table lacks the kept features {missing[:5]} of {source}; "
                "give a table with the training table's columns"
            )
        return feature_rows(runset, runs, None)
    return feature_rows(runset, runs, model_embedding(model, source))


def model_embedding(model: Model, source: str) -> GraphEmbedding:
    """Build the embedding that a model file names, with its parameters.

    Raises
    ------
    ModelError
        The model was trained on a feature table, or names an embedding
        that is not registered, or parameters that the embedding rejects.
        The message names ``source``.
    """
    from syslrn.embed import EMBEDDINGS, make_embedding

    name = model.embedding["name"]
    if name == TABLE_EMBEDDING:
        raise ModelError(
            f"{source}: the model was trained on a feature table; give a feature "
            "table with the same columns"
        )
    if name not in EMBEDDINGS:
        raise ModelError(
            f"{source}: embedding {name!r} is unknown (known: "
            f"{', '.join(sorted(EMBEDDINGS))}); correct the name in the file or "
            "train the model again"
        )
    try:
        embedding = make_embedding(name, model.embedding["params"])
        _check_params(embedding, name)
    except SyslrnError as exc:
        raise ModelError(
            f"{source}: {exc}; correct the embedding parameters in the file or "
            "train the model again"
        ) from None
    return embedding


def describe_for(runset: RunSet, embedding: GraphEmbedding | None):
    from syslrn.embed import split_feature_name

    return (
        split_feature_name
        if runset.kind == "table" or embedding is None
        else embedding.describe
    )


def format_number(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def format_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    right: Sequence[bool] | None = None,
) -> str:
    """Lay out rows of strings as aligned columns under a header line."""
    right = right or [False] * len(headers)
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            c.rjust(w) if r else c.ljust(w)
            for c, w, r in zip(cells, widths, right, strict=True)
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers)] + [line(r) for r in rows])
