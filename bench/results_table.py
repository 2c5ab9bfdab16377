"""Tables of docs/results.md: syslrn and DeepLog on the same campaigns.

For each campaign directory it trains a model on all failure-free runs (for
the feature counts), runs `syslrn evaluate` and `syslrn baseline deeplog
campaign --combined` with the same folds, and prints Markdown tables:

    .venv/bin/python bench/results_table.py DIR [DIR ...] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

SYSLRN = [sys.executable, "-m", "syslrn"]


def _json_command(*args: str) -> dict:
    result = subprocess.run([*SYSLRN, *args, "--json"], capture_output=True, text=True)
    if result.returncode not in (0, 1):
        raise SystemExit(f"syslrn {' '.join(args)} failed:\n{result.stderr}")
    return json.loads(result.stdout)


def _features(campaign: Path) -> tuple[int, int]:
    with tempfile.TemporaryDirectory() as tmp:
        model_path = Path(tmp) / "model.json"
        subprocess.run(
            [*SYSLRN, "train", str(campaign), "-o", str(model_path)],
            check=True,
            capture_output=True,
        )
        model = json.loads(model_path.read_text())
    features = model["features"]
    return len(features), sum(1 for f in features if f["kept"])


def evaluate(campaign: Path) -> dict:
    ours = _json_command("evaluate", str(campaign))
    deeplog = _json_command(
        "baseline", "deeplog", "campaign", str(campaign), "--combined"
    )
    total, kept = _features(campaign)
    result = ours["results"][0]
    return {
        "campaign": campaign.name,
        "experiments": ours["experiments"],
        "failure_free": ours["failure_free"],
        "failure": ours["failure"],
        "folds": ours["folds"],
        "features": total,
        "kept": kept,
        "syslrn": {k: result[k] for k in ("recall", "selectivity", "precision", "f1")},
        "syslrn_per_fault": {k: v["recall"] for k, v in result["per_fault"].items()},
        "deeplog": {
            k: deeplog["scores"]["combined"][k]
            for k in ("recall", "selectivity", "precision", "f1")
        },
        "deeplog_per_fault": {
            k: v["recall"] for k, v in deeplog["fault_scores"]["combined"].items()
        },
        "fault_runs": {k: v["runs"] for k, v in result["per_fault"].items()},
    }


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def markdown(rows: list[dict]) -> str:
    lines = [
        "| scenario | experiments | failure-free | failure | features | kept | "
        "syslrn recall | syslrn selectivity | DeepLog recall | DeepLog selectivity |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['campaign']} | {row['experiments']} | {row['failure_free']} | "
            f"{row['failure']} | {row['features']} | {row['kept']} | "
            f"{_pct(row['syslrn']['recall'])} | {_pct(row['syslrn']['selectivity'])} | "
            f"{_pct(row['deeplog']['recall'])} | {_pct(row['deeplog']['selectivity'])} |"
        )
    for row in rows:
        lines += [
            "",
            f"Recall per fault, {row['campaign']}:",
            "",
            "| fault | runs | syslrn | DeepLog |",
            "|---|---|---|---|",
        ]
        for fault, runs in sorted(row["fault_runs"].items()):
            lines.append(
                f"| {fault} | {runs} | {_pct(row['syslrn_per_fault'].get(fault))} | "
                f"{_pct(row['deeplog_per_fault'].get(fault))} |"
            )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("campaigns", nargs="+", type=Path)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    rows = [evaluate(campaign) for campaign in args.campaigns]
    print(markdown(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
