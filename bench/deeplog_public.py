"""Benchmark DeepLog on the public OpenStack log-key sequences.

Trains on ``openstack_train``, judges ``openstack_test_normal`` and
``openstack_test_abnormal``, and prints recall, selectivity, precision, F1,
training and inference wall-clock time and sessions per second at
inference, for each g setting and seed. Run from the repository root:

    PYTHONPATH=src python bench/deeplog_public.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import torch

from syslrn.baselines.evaluation import DeepLogConfig, evaluate_sequences
from syslrn.baselines.sessions import read_key_sequences

DATA = (
    Path(__file__).resolve().parent.parent
    / "data"
    / "log-sequences"
    / "openstack_kalaki"
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=DATA,
        help="directory with the three sequence files (default: %(default)s)",
    )
    parser.add_argument(
        "--top-g",
        default="9,auto",
        help="comma-separated g settings, integers or 'auto' (default: %(default)s)",
    )
    parser.add_argument(
        "--seeds",
        default="0,1,2",
        help="comma-separated training seeds (default: %(default)s)",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="PyTorch threads (default: 1)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON rows")
    args = parser.parse_args()

    train = [keys for _, keys in read_key_sequences(args.data / "openstack_train")]
    normal = [
        keys for _, keys in read_key_sequences(args.data / "openstack_test_normal")
    ]
    abnormal = [
        keys for _, keys in read_key_sequences(args.data / "openstack_test_abnormal")
    ]

    rows = []
    for setting in args.top_g.split(","):
        top_g = None if setting == "auto" else int(setting)
        for seed in (int(s) for s in args.seeds.split(",")):
            config = DeepLogConfig(
                top_g=top_g, model_params={"seed": seed, "n_threads": args.threads}
            )
            result = evaluate_sequences(train, normal, abnormal, config)
            row = {"setting": setting, "seed": seed, **result.to_dict()}
            rows.append(row)
            if not args.json:
                _print_row(row, header=len(rows) == 1)

    if args.json:
        json.dump({"host": _host(args.threads), "rows": rows}, sys.stdout, indent=2)
        print()
    else:
        print()
        print(_host(args.threads))
    return 0


def _print_row(row: dict, header: bool) -> None:
    if header:
        print(
            f"{'g':>5} {'seed':>4} {'chosen':>6} {'recall':>7} {'select.':>7} "
            f"{'prec.':>7} {'F1':>7} {'train s':>8} {'infer s':>8} {'sess/s':>7}"
        )
    scores = row["scores"]
    print(
        f"{row['setting']:>5} {row['seed']:>4} {row['top_g']:>6} "
        f"{scores['recall']:>7.3f} {scores['selectivity']:>7.3f} "
        f"{scores['precision']:>7.3f} {scores['f1']:>7.3f} "
        f"{row['train_seconds']:>8.2f} {row['inference_seconds']:>8.2f} "
        f"{row['sessions_per_second']:>7.0f}"
    )


def _host(threads: int) -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} CPUs, PyTorch {torch.__version__} "
        f"on {threads} thread(s), Python {platform.python_version()}"
    )


if __name__ == "__main__":
    sys.exit(main())
