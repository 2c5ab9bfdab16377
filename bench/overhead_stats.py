"""Summaries, tables and the plot of the redis overhead benchmark.

Every drop is taken against the baseline of the same round, so that load
from other jobs on the machine, which changes from one minute to the next,
cancels out of the ratio as far as it can.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: Name of the row that adds the four tests up: all requests over all time.
ALL = "all"


def spread(values: Sequence[float]) -> dict[str, float]:
    """Return the median, quartiles, minimum and maximum of ``values``."""
    values = sorted(values)
    if len(values) >= 2:
        q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    else:
        q1 = q3 = values[0]
    return {
        "median": statistics.median(values),
        "q1": q1,
        "q3": q3,
        "min": values[0],
        "max": values[-1],
        "n": len(values),
    }


def round_rates(run: dict[str, Any], operations: Sequence[str]) -> dict[str, float]:
    """Return a condition's requests/s per operation in one round, and over
    all operations (total requests over total time at the reported rates)."""
    ops = run["ops"]
    rates = {op: ops[op]["rps"] for op in operations}
    requests = sum(ops[op]["requests"] for op in operations)
    seconds = sum(ops[op]["requests"] / ops[op]["rps"] for op in operations)
    rates[ALL] = requests / seconds
    return rates


def round_costs(run: dict[str, Any], operations: Sequence[str]) -> dict[str, float]:
    """Return a condition's CPU cost in one round, over all operations.

    ``server_us`` is redis-server's CPU time per request and ``total_us``
    adds redis-benchmark's and the monitoring tool's, in microseconds.
    ``wait_pct`` is the share of wall-clock time redis-server waited for a
    CPU, which shows how much other load there was.
    """
    ops = [run["ops"][op] for op in operations]
    requests = sum(r["requests"] for r in ops)
    server = sum(r["server_cpu_s"] for r in ops)
    total = server + sum(r["client_cpu_s"] + r["tool_cpu_s"] for r in ops)
    return {
        "server_us": 1e6 * server / requests,
        "total_us": 1e6 * total / requests,
        "wait_pct": 100.0
        * sum(r["server_wait_s"] for r in ops)
        / sum(r["wall_s"] for r in ops),
    }


def summarize(
    rounds: list[dict[str, Any]],
    conditions: Sequence[str],
    operations: Sequence[str],
    clean_only: bool = False,
) -> dict[str, Any]:
    """Summarize the rounds: rates, drops and CPU costs per condition.

    Parameters
    ----------
    rounds : list of dict
        ``{"runs": {condition: {"ops": {op: {...}}, "bpf": {...}}}}`` per
        round, with the fields :func:`round_rates` and :func:`round_costs`
        read. A round without a baseline is skipped.
    conditions : sequence of str
        Condition names; ``baseline`` must be among them.
    operations : sequence of str
    clean_only : bool
        Use only runs during which no other process had tracepoint programs
        attached (an empty ``foreign`` list), and only rounds whose baseline
        is such a run.

    Returns
    -------
    dict
        ``rps[condition][operation]`` and ``drop_pct[condition][operation]``
        (positive: slower than the baseline), with ``operation`` also
        ``"all"``; ``cost[condition][measure]`` with the measures of
        :func:`round_costs` and ``server_increase_pct`` and
        ``total_increase_pct`` against the baseline. Each is a
        :func:`spread` over rounds. ``bpf[condition][program]`` contains run
        counts and times when program statistics were collected.
    """
    rows = [*operations, ALL]
    rates = {c: {op: [] for op in rows} for c in conditions}
    drops = {c: {op: [] for op in rows} for c in conditions if c != "baseline"}
    costs = {c: {} for c in conditions}
    for round_ in rounds:
        runs = round_["runs"]
        if clean_only:
            runs = {c: run for c, run in runs.items() if not run.get("foreign")}
        if "baseline" not in runs:
            continue
        base_rate = round_rates(runs["baseline"], operations)
        base_cost = round_costs(runs["baseline"], operations)
        for condition in conditions:
            if condition not in runs:
                continue
            rate = round_rates(runs[condition], operations)
            for op in rows:
                rates[condition][op].append(rate[op])
                if condition != "baseline":
                    drops[condition][op].append(
                        100.0 * (1.0 - rate[op] / base_rate[op])
                    )
            cost = round_costs(runs[condition], operations)
            for name in ("server", "total"):
                cost[f"{name}_increase_pct"] = 100.0 * (
                    cost[f"{name}_us"] / base_cost[f"{name}_us"] - 1.0
                )
            for name, value in cost.items():
                costs[condition].setdefault(name, []).append(value)

    def spreads(table):
        return {
            c: {key: spread(v) for key, v in values.items() if v}
            for c, values in table.items()
        }

    return {
        "rps": spreads(rates),
        "drop_pct": spreads(drops),
        "cost": spreads(costs),
        "bpf": summarize_bpf(rounds, conditions, operations),
    }


def summarize_bpf(
    rounds: list[dict[str, Any]], conditions: Sequence[str], operations: Sequence[str]
) -> dict[str, dict[str, dict[str, float]]]:
    """Add up the BPF program counters of each condition over the rounds."""
    result: dict[str, dict[str, dict[str, float]]] = {}
    for condition in conditions:
        programs: dict[str, dict[str, float]] = {}
        requests = 0
        for round_ in rounds:
            run = round_["runs"].get(condition)
            if not run or "bpf" not in run:
                continue
            requests += sum(run["ops"][op]["requests"] for op in operations)
            for name, counters in run["bpf"].items():
                total = programs.setdefault(name, {"run_cnt": 0, "run_time_ns": 0})
                total["run_cnt"] += counters["run_cnt"]
                total["run_time_ns"] += counters["run_time_ns"]
        if not programs:
            continue
        for total in programs.values():
            total["ns_per_run"] = total["run_time_ns"] / max(total["run_cnt"], 1)
            total["runs_per_request"] = total["run_cnt"] / requests
            total["ns_per_request"] = total["run_time_ns"] / requests
        result[condition] = programs
    return result


def _cell(
    stats: dict[str, float] | None,
    digits: int,
    thousands: bool = False,
    show_n: bool = False,
) -> str:
    if stats is None:
        return "n/a"
    form = f"{{:,.{digits}f}}" if thousands else f"{{:.{digits}f}}"
    text = (
        f"{form.format(stats['median'])} "
        f"[{form.format(stats['q1'])}, {form.format(stats['q3'])}]"
    )
    return f"{text} n={stats['n']}" if show_n else text


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def drop_table(
    summary: dict[str, Any],
    conditions: Sequence[str],
    labels: dict[str, str],
    operations: Sequence[str],
    show_n: bool = False,
) -> str:
    """Lay out baseline requests/s and each condition's drop as Markdown.

    Cells are the median over rounds with the quartiles in brackets and,
    with ``show_n``, the number of rounds.
    """
    others = [c for c in conditions if c != "baseline"]
    header = [
        "operation",
        "baseline (req/s)",
        *(f"{labels[c]} (drop %)" for c in others),
    ]
    rows = []
    for op in [*operations, ALL]:
        row = [op.upper() if op != ALL else "all four"]
        row.append(
            _cell(summary["rps"]["baseline"].get(op), 0, thousands=True, show_n=show_n)
        )
        for condition in others:
            drop = summary["drop_pct"].get(condition, {}).get(op)
            row.append(_cell(drop, 1, show_n=show_n))
        rows.append(row)
    return _markdown(header, rows)


def cost_table(
    summary: dict[str, Any], conditions: Sequence[str], labels: dict[str, str]
) -> str:
    """Lay out the CPU time per request of each condition as Markdown."""
    header = [
        "condition",
        "redis-server (us/request)",
        "increase (%)",
        "all processes (us/request)",
        "increase (%)",
        "redis waiting for a CPU (% of time)",
    ]
    rows = []
    for condition in conditions:
        cost = summary["cost"][condition]
        rows.append(
            [
                labels[condition],
                _cell(cost.get("server_us"), 1),
                _cell(cost.get("server_increase_pct"), 1),
                _cell(cost.get("total_us"), 1),
                _cell(cost.get("total_increase_pct"), 1),
                _cell(cost.get("wait_pct"), 0),
            ]
        )
    return _markdown(header, rows)


def bpf_table(summary: dict[str, Any], labels: dict[str, str]) -> str:
    """Lay out the BPF programs' run counts and run times as Markdown."""
    header = [
        "condition",
        "program",
        "runs per request",
        "ns per run",
        "ns per request",
    ]
    rows = []
    for condition, programs in summary["bpf"].items():
        for name, total in sorted(programs.items()):
            rows.append(
                [
                    labels[condition],
                    name,
                    f"{total['runs_per_request']:.2f}",
                    f"{total['ns_per_run']:.0f}",
                    f"{total['ns_per_request']:.0f}",
                ]
            )
    return _markdown(header, rows)


#: One colour per condition, the same in every plot.
COLORS = {
    "logging": "tab:blue",
    "monitor": "tab:green",
    "recorder": "tab:orange",
    "bpftrace": "tab:red",
    "repeat": "tab:gray",
}


def plot(
    summary: dict[str, Any],
    rounds: list[dict[str, Any]],
    conditions: Sequence[str],
    labels: dict[str, str],
    operations: Sequence[str],
    path: Path,
    targets: dict[str, float],
) -> None:
    """Draw the drops per operation: every condition on the left, and on the
    right the ones near zero, with their targets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [*operations, ALL]
    others = [c for c in conditions if c != "baseline"]
    near_zero = [c for c in others if c in ("monitor", "recorder", "repeat")]
    fig, axes = plt.subplots(
        1, 3, figsize=(17, 4.8), gridspec_kw={"width_ratios": [3, 2, 2]}
    )
    _draw_drops(axes[0], summary, rounds, others, labels, operations)
    _draw_drops(axes[1], summary, rounds, near_zero, labels, operations)
    for condition, target in targets.items():
        if condition in near_zero:
            axes[1].axhline(target, color=COLORS[condition], ls="--", lw=1)
    for ax in axes[:2]:
        ax.set_xticks(range(len(rows)), [_row_name(op) for op in rows])
        ax.set_ylabel("throughput drop against the round's baseline (%)")
    _draw_costs(axes[2], summary, others, labels)
    for ax in axes:
        ax.axhline(0, color="black", lw=0.8)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    axes[0].set_title("throughput, all conditions")
    axes[1].set_title("throughput, near zero; dashed lines: targets")
    axes[2].set_title("CPU time per request, all four tests")
    fig.suptitle(
        "redis-server under redis-benchmark (50 clients, a connection per "
        "request): median over rounds, whiskers are quartiles, dots are rounds",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _draw_costs(ax, summary, conditions_drawn, labels) -> None:
    """Bars of the CPU time increase per request: redis-server alone (solid)
    and all processes (hatched), per condition."""
    width = 0.4
    for j, condition in enumerate(conditions_drawn):
        cost = summary["cost"].get(condition, {})
        for offset, key, hatch in (
            (-width / 2, "server_increase_pct", None),
            (width / 2, "total_increase_pct", "//"),
        ):
            if key not in cost:
                continue
            stats = cost[key]
            ax.bar(
                j + offset, stats["median"], width, color=COLORS.get(condition),
                alpha=0.8, hatch=hatch, edgecolor="black", lw=0.5,
                yerr=[[stats["median"] - stats["q1"]], [stats["q3"] - stats["median"]]],
                capsize=2,
            )  # fmt: skip
    ax.set_xticks(
        range(len(conditions_drawn)), [labels[c] for c in conditions_drawn], rotation=20
    )
    ax.set_ylabel("increase against the round's baseline (%)")
    ax.bar(0, 0, 0, color="white", edgecolor="black", label="redis-server")
    ax.bar(0, 0, 0, color="white", edgecolor="black", hatch="//", label="all processes")


def _row_name(op: str) -> str:
    return "all four" if op == ALL else op.upper()


def _draw_drops(ax, summary, rounds, conditions_drawn, labels, operations) -> None:
    rows = [*operations, ALL]
    width = 0.8 / max(len(conditions_drawn), 1)
    for i, condition in enumerate(conditions_drawn):
        drops = summary["drop_pct"].get(condition, {})
        offset = (i - (len(conditions_drawn) - 1) / 2) * width
        for j, op in enumerate(rows):
            if op not in drops:
                continue
            stats = drops[op]
            x = j + offset
            ax.bar(
                x, stats["median"], width, color=COLORS.get(condition),
                alpha=0.8, label=labels[condition] if j == 0 else None,
                yerr=[[stats["median"] - stats["q1"]], [stats["q3"] - stats["median"]]],
                capsize=2,
            )  # fmt: skip
            points = _round_drops(rounds, condition, op, operations)
            ax.plot([x] * len(points), points, ".", color="black", ms=3)


def _round_drops(
    rounds: list[dict[str, Any]], condition: str, op: str, operations: Sequence[str]
) -> list[float]:
    drops = []
    for round_ in rounds:
        runs = round_["runs"]
        if "baseline" in runs and condition in runs:
            base = round_rates(runs["baseline"], operations)[op]
            drops.append(
                100.0 * (1.0 - round_rates(runs[condition], operations)[op] / base)
            )
    return drops
