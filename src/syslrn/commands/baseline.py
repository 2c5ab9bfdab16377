"""``syslrn baseline``: log-based detectors to compare syslrn with.

``syslrn baseline deeplog sequences`` trains DeepLog on files of pre-parsed
log-key sequences and scores labelled test files. ``syslrn baseline deeplog
campaign DIR`` cross-validates DeepLog on the logs of a campaign's
experiments, in the folds that ``syslrn evaluate`` uses.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from syslrn.errors import SyslrnError
from syslrn.text import format_count

if TYPE_CHECKING:
    from syslrn.baselines.evaluation import (
        CampaignEvaluation,
        DeepLogConfig,
        SequenceEvaluation,
    )

# Defaults of DeepLog and of syslrn's folds. They are repeated here because
# importing the modules that define them loads PyTorch and scikit-learn,
# which would slow down every syslrn command. A test checks that both
# copies agree.
DEFAULT_WINDOW = 10
DEFAULT_TOP_G = 9
DEFAULT_LAYERS = 2
DEFAULT_HIDDEN = 64
DEFAULT_EPOCHS = 100
DEFAULT_BATCH_SIZE = 64
DEFAULT_LEARNING_RATE = 1e-2
DEFAULT_FOLDS = 10
DEFAULT_FOLD_SEED = 0
COMBINED = "combined"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "baseline",
        help="run a log-based baseline detector",
        description="Run a log-based detector on the same data as syslrn, for comparison.",
    )
    detectors = parser.add_subparsers(dest="detector", metavar="DETECTOR")
    detectors.required = True

    deeplog = detectors.add_parser(
        "deeplog",
        help="DeepLog: next-log-key LSTM (Du et al., CCS 2017)",
        description=(
            "DeepLog flags a session when one of its log keys is not among the "
            "g keys that an LSTM predicts as most probable from the keys before it."
        ),
    )
    modes = deeplog.add_subparsers(dest="mode", metavar="MODE")
    modes.required = True

    sequences = modes.add_parser(
        "sequences",
        help="train and test on files of pre-parsed key sequences",
        description=(
            "Train on normal key sequences and score labelled test sequences. "
            "Each line of a file is 'session-id,key key key ...'."
        ),
    )
    sequences.add_argument(
        "--train", required=True, metavar="FILE", help="normal sequences to train on"
    )
    sequences.add_argument(
        "--test-normal", required=True, metavar="FILE", help="normal test sequences"
    )
    sequences.add_argument(
        "--test-abnormal", required=True, metavar="FILE", help="abnormal test sequences"
    )
    sequences.add_argument(
        "--json", action="store_true", help="print the results as JSON"
    )
    _add_model_arguments(sequences)
    sequences.set_defaults(func=run_sequences)

    campaign = modes.add_parser(
        "campaign",
        help="cross-validate on the logs of a campaign's experiments",
        description=(
            "Train on the logs of failure-free experiments and judge the others, "
            "fold by fold, in the folds of 'syslrn evaluate'. Each selected "
            "component is one single configuration; --combined also reports the "
            "configuration that flags an experiment when any component does."
        ),
    )
    campaign.add_argument("directory", metavar="DIR", help="campaign directory")
    campaign.add_argument(
        "--components",
        type=_component_list,
        metavar="A,B",
        help="comma-separated components to use (default: all)",
    )
    campaign.add_argument(
        "--combined", action="store_true", help="also report the combined configuration"
    )
    campaign.add_argument(
        "--folds",
        type=_positive_int,
        default=DEFAULT_FOLDS,
        help="number of cross-validation folds (default: %(default)s)",
    )
    campaign.add_argument(
        "--fold-seed",
        type=int,
        default=DEFAULT_FOLD_SEED,
        help="seed of the folds (default: %(default)s)",
    )
    campaign.add_argument(
        "--similarity",
        type=_closed_fraction,
        default=0.4,
        help="Drain similarity threshold of the log parser (default: %(default)s)",
    )
    campaign.add_argument(
        "--depth",
        type=_positive_int,
        default=4,
        help="depth of Drain's prefix tree (default: %(default)s)",
    )
    campaign.add_argument(
        "--no-default-masks",
        action="store_true",
        help="apply only the campaign's own masks, not the built-in "
        "ones for times, ids, addresses and numbers",
    )
    campaign.add_argument(
        "--json", action="store_true", help="print the results as JSON"
    )
    _add_model_arguments(campaign)
    campaign.set_defaults(func=run_campaign)


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("DeepLog model")
    group.add_argument(
        "--window",
        type=_positive_int,
        default=DEFAULT_WINDOW,
        help="history length h in keys (default: %(default)s)",
    )
    group.add_argument(
        "--top-g",
        type=_top_g,
        default=DEFAULT_TOP_G,
        metavar="G|auto",
        help="number of most probable next keys a key must be among; "
        "'auto' chooses it on a validation split of the training "
        "data (default: %(default)s)",
    )

    group.add_argument(
        "--layers",
        type=_positive_int,
        default=DEFAULT_LAYERS,
        help="stacked LSTM layers (default: %(default)s)",
    )
    group.add_argument(
        "--hidden",
        type=_positive_int,
        default=DEFAULT_HIDDEN,
        help="units per LSTM layer (default: %(default)s)",
    )

    group.add_argument(
        "--epochs",
        type=_positive_int,
        default=DEFAULT_EPOCHS,
        help="training epochs (default: %(default)s)",
    )
    group.add_argument(
        "--batch-size",
        type=_positive_int,
        default=DEFAULT_BATCH_SIZE,
        help="training windows per step (default: %(default)s)",
    )
    group.add_argument(
        "--learning-rate",
        type=_positive_float,
        default=DEFAULT_LEARNING_RATE,
        help="Adam step size (default: %(default)s)",
    )
    group.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of training and of the validation split (default: %(default)s)",
    )
    group.add_argument(
        "--threads",
        type=_positive_int,
        default=1,
        help="PyTorch threads (default: %(default)s)",
    )

    group.add_argument(
        "--validation-fraction",
        type=_open_fraction,
        default=0.2,
        help="share of the training data held out to choose g with "
        "--top-g auto (default: %(default)s)",
    )
    group.add_argument(
        "--max-false-alarm",
        type=_closed_fraction,
        default=0.0,
        help="share of held-out failure-free units that the chosen g "
        "may flag, with --top-g auto (default: %(default)s)",
    )


def _load_evaluation():
    """Import the DeepLog evaluation, which needs the optional PyTorch."""
    try:
        from syslrn.baselines import evaluation
    except ModuleNotFoundError as exc:
        if exc.name != "torch":
            raise
        raise SyslrnError(
            "DeepLog needs PyTorch, which is not installed; "
            "install it with: pip install 'syslrn[deeplog]'"
        ) from None
    return evaluation


def _config(args: argparse.Namespace) -> DeepLogConfig:
    from syslrn.baselines.evaluation import DeepLogConfig

    parser_params = {}
    if hasattr(args, "similarity"):
        parser_params = {
            "similarity": args.similarity,
            "depth": args.depth,
            "default_masks": not args.no_default_masks,
        }
    return DeepLogConfig(
        top_g=args.top_g,
        model_params={
            "window": args.window,
            "n_layers": args.layers,
            "hidden_size": args.hidden,
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "learning_rate": args.learning_rate,
            "seed": args.seed,
            "n_threads": args.threads,
        },
        parser_params=parser_params,
        validation_fraction=args.validation_fraction,
        max_false_alarm=args.max_false_alarm,
    )


def run_sequences(args: argparse.Namespace) -> int:
    from syslrn.baselines.sessions import read_key_sequences

    evaluation = _load_evaluation()
    config = _config(args)
    train = [keys for _, keys in read_key_sequences(args.train)]
    normal = [keys for _, keys in read_key_sequences(args.test_normal)]
    abnormal = [keys for _, keys in read_key_sequences(args.test_abnormal)]
    result = evaluation.evaluate_sequences(train, normal, abnormal, config)
    if args.json:
        json.dump(result.to_dict(), sys.stdout, indent=2)
        print()
    else:
        _print_sequences(result)
    return 0


def run_campaign(args: argparse.Namespace) -> int:
    evaluation = _load_evaluation()
    config = _config(args)
    result = evaluation.evaluate_campaign(
        args.directory,
        args.components,
        n_folds=args.folds,
        fold_seed=args.fold_seed,
        config=config,
    )
    configurations = list(result.components)
    if args.combined:
        configurations.append(COMBINED)
    if args.json:
        document = result.to_dict()
        document["reported"] = configurations
        json.dump(document, sys.stdout, indent=2)
        print()
    else:
        _print_campaign(result, configurations)
    return 0


def _print_sequences(result: SequenceEvaluation) -> None:
    scores = result.scores
    print(
        f"DeepLog, g={result.top_g}, {format_count(result.n_keys, 'key')}, "
        f"{format_count(result.train_sessions, 'training session')}"
    )
    print(
        f"  recall       {_fmt(scores.recall)}  "
        f"({scores.true_positives} of "
        f"{format_count(scores.failures, 'abnormal session')} flagged)"
    )
    print(
        f"  selectivity  {_fmt(scores.selectivity)}  "
        f"({scores.true_negatives} of "
        f"{format_count(scores.normals, 'normal session')} passed)"
    )
    print(f"  precision    {_fmt(scores.precision)}")
    print(f"  F1           {_fmt(scores.f1)}")
    print(f"  training     {result.train_seconds:.2f} s")
    print(
        f"  inference    {result.inference_seconds:.2f} s "
        f"({result.sessions_per_second:.0f} sessions/s)"
    )


def _print_campaign(result: CampaignEvaluation, configurations: list[str]) -> None:
    print(
        f"DeepLog on {result.directory} (scenario {result.scenario or '-'}), "
        f"{len(result.folds)} folds, "
        f"{format_count(len(result.experiments), 'workload experiment')}"
    )
    print()
    header = (
        f"{'configuration':<16} {'g':>5} {'recall':>7} {'select.':>7} "
        f"{'prec.':>7} {'F1':>7} {'failures':>9} {'normals':>8}"
    )
    print(header)
    for name in configurations:
        scores = result.scores(name)
        print(
            f"{name:<16} {_g_range(result, name):>5} {_fmt(scores.recall):>7} "
            f"{_fmt(scores.selectivity):>7} {_fmt(scores.precision):>7} "
            f"{_fmt(scores.f1):>7} {scores.failures:>9} {scores.normals:>8}"
        )

    rows = [
        (name, fault, scores)
        for name in configurations
        for fault, scores in result.fault_scores(name).items()
    ]
    if not rows:
        return
    print()
    print(
        "Per fault (failures and failure-free runs counted once per fold that judged them)"
    )
    print(
        f"{'fault':<24} {'configuration':<16} {'recall':>7} {'failures':>9} "
        f"{'select.':>7} {'normals':>8}"
    )
    order = {name: i for i, name in enumerate(configurations)}
    for name, fault, scores in sorted(rows, key=lambda row: (row[1], order[row[0]])):
        print(
            f"{fault:<24} {name:<16} {_fmt(scores.recall):>7} {scores.failures:>9} "
            f"{_fmt(scores.selectivity):>7} {scores.normals:>8}"
        )


def _g_range(result: CampaignEvaluation, configuration: str) -> str:
    if configuration == COMBINED:
        return "-"
    values = sorted({fold.top_g[configuration] for fold in result.folds})
    return str(values[0]) if len(values) == 1 else f"{values[0]}-{values[-1]}"


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return value


def _positive_float(text: str) -> float:
    value = _float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number")
    return value


def _open_fraction(text: str) -> float:
    value = _float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not strictly between 0 and 1")
    return value


def _closed_fraction(text: str) -> float:
    value = _float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{value} is not between 0 and 1")
    return value


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def _top_g(text: str) -> int | None:
    return None if text == "auto" else _positive_int(text)


def _component_list(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected at least one component name")
    return names
