"""A model's report: figures of its features and of a system graph, and an index.html.

Figures are drawn on :class:`matplotlib.figure.Figure` objects with the Agg
canvas, so no display and no global pyplot state is involved.
"""

from __future__ import annotations

import html
import logging
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import networkx as nx
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from syslrn.graph.system import EDGE_KINDS, EXTERNAL, SystemGraph
from syslrn.model import Detection, Model
from syslrn.model.classes import (
    APPLICATION_BACKGROUND,
    SYSTEM_BACKGROUND,
    WORKLOAD_DRIVEN,
)
from syslrn.text import format_count

log = logging.getLogger(__name__)

#: Graphs with more nodes are drawn as one node per node type.
MAX_DRAWN_PROCESSES = 300
#: Maximum number of features in the R^2 chart (the best ones by R^2).
MAX_R2_BARS = 60

_CLASS_COLOURS = {
    WORKLOAD_DRIVEN: "#d62728",
    APPLICATION_BACKGROUND: "#1f77b4",
    SYSTEM_BACKGROUND: "#7f7f7f",
    "driver": "#bcbd22",
    EXTERNAL: "#ffffff",
    "unclassed": "#c7c7c7",
}
_EDGE_COLOURS = {"spawn": "#555555", "ipc": "#2ca02c", "net": "#ff7f0e"}


@dataclass
class ReportRun:
    """A run shown in the report: its features and the model's verdict."""

    name: str
    requests: int
    features: dict[str, float]
    detection: Detection


def write_report(
    model: Model,
    out_dir: Path,
    runs: Sequence[ReportRun] = (),
    graph: SystemGraph | None = None,
    title: str = "syslrn model",
) -> Path:
    """Write the figures and index.html of a model into ``out_dir``.

    Parameters
    ----------
    model : Model
    out_dir : Path
        Created if missing. Its parent must exist, so that a mistyped path
        fails instead of creating a tree elsewhere.
    runs : sequence of ReportRun
        Runs to plot beside the training runs, coloured by verdict.
    graph : SystemGraph, optional
        The run whose system graph is drawn.

    Returns
    -------
    Path
        The index.html written.
    """
    out_dir.mkdir(exist_ok=True)
    classes = dict(model.training.get("classes") or {})

    figures = []
    for i, feature in enumerate(model.kept_features):
        name = f"feature-{i:03d}-{_safe(feature.name)}.png"
        _save(_feature_figure(model, feature.name, runs), out_dir / name)
        figures.append((feature.name, name))
    r2_name = "r2.png"
    _save(_r2_figure(model), out_dir / r2_name)
    graph_name = None
    if graph is not None:
        graph_name = "graph.png"
        _save(_graph_figure(graph, classes), out_dir / graph_name)

    index = out_dir / "index.html"
    index.write_text(
        _index_html(model, figures, r2_name, graph, graph_name, runs, classes, title)
    )
    log.info("report written to %s", index)
    return index


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:60]


def _save(figure: Figure, path: Path) -> None:
    FigureCanvasAgg(figure)
    # Fixed margins: a tight bounding box would draw every figure twice.
    figure.savefig(path, dpi=100)


def _feature_figure(model: Model, name: str, runs: Sequence[ReportRun]) -> Figure:
    entry = next(f for f in model.features if f.name == name)
    train_x = np.asarray(model.training.get("requests") or [], dtype=float)
    train_y = np.asarray(
        (model.training.get("observations") or {}).get(name) or [], dtype=float
    )
    figure = Figure(figsize=(5.5, 3.8))
    figure.subplots_adjust(left=0.15, right=0.97, top=0.86, bottom=0.13)
    ax = figure.add_subplot()

    xs = list(train_x) + [r.requests for r in runs]
    top = max(xs) if xs else 1.0
    line_x = np.linspace(0, top * 1.05 if top > 0 else 1.0, 50)
    line_y = entry.slope * line_x + entry.intercept
    ax.fill_between(
        line_x,
        line_y - entry.tolerance,
        line_y + entry.tolerance,
        color="#1f77b4",
        alpha=0.15,
        label=f"tolerance ±{entry.tolerance:.3g}",
    )
    ax.plot(line_x, line_y, color="#1f77b4", label="expected")
    if len(train_y) == len(train_x) and len(train_x):
        ax.scatter(
            train_x, train_y, s=18, color="#333333", label="training runs", zorder=3
        )
    for anomalous, colour, label in (
        (False, "#2ca02c", "normal"),
        (True, "#d62728", "anomalous"),
    ):
        chosen = [r for r in runs if r.detection.anomalous == anomalous]
        if chosen:
            ax.scatter(
                [r.requests for r in chosen],
                [r.features.get(name, 0.0) for r in chosen],
                s=30,
                marker="D",
                color=colour,
                label=f"{label} runs",
                zorder=4,
            )

    r2 = "-" if entry.r2 is None else f"{entry.r2:.3f}"
    ax.set_title(
        f"{name}\nR^2 {r2}, slope {entry.slope:.3g}, intercept {entry.intercept:.3g}",
        fontsize=9,
    )
    ax.set_xlabel("requests")
    ax.set_ylabel(name)
    ax.legend(fontsize=7, loc="best")
    return figure


def _r2_figure(model: Model) -> Figure:
    ranked = sorted(
        model.features, key=lambda f: (-(f.r2 if f.r2 is not None else -1.0), f.name)
    )[:MAX_R2_BARS]
    height = max(2.0, 0.2 * len(ranked) + 1.0)
    figure = Figure(figsize=(6.5, height), layout="tight")
    ax = figure.add_subplot()
    values = [f.r2 if f.r2 is not None else 0.0 for f in ranked]
    colours = ["#2ca02c" if f.kept else "#bbbbbb" for f in ranked]
    positions = np.arange(len(ranked))
    ax.barh(positions, values, color=colours)
    ax.set_yticks(positions, [f.name for f in ranked], fontsize=7)
    ax.invert_yaxis()
    threshold = model.model.get("params", {}).get("r2_threshold")
    if threshold is not None and not model.degenerate:
        ax.axvline(
            threshold,
            color="#d62728",
            linestyle="--",
            linewidth=1,
            label=f"R^2 threshold {threshold:g}",
        )
        ax.legend(fontsize=7, loc="lower right")
    ax.set_xlim(min(0.0, min(values, default=0.0)), 1.0)
    ax.set_xlabel("R^2 (green: kept)")
    shown = (
        f"best {len(ranked)} of {len(model.features)}"
        if len(model.features) > len(ranked)
        else f"all {len(ranked)}"
    )
    ax.set_title(f"R^2 of the features ({shown})", fontsize=9)
    return figure


def _node_class(graph: SystemGraph, i: int, classes: dict[str, str]) -> str:
    if graph.external[i]:
        return EXTERNAL
    if graph.driven and graph.driver[i]:
        return "driver"
    return classes.get(graph.type_names[graph.type_index[i]], "unclassed")


def _graph_figure(graph: SystemGraph, classes: dict[str, str]) -> Figure:
    figure = Figure(figsize=(9, 7))
    figure.subplots_adjust(left=0.01, right=0.99, top=0.95, bottom=0.01)
    ax = figure.add_subplot()
    ax.set_axis_off()
    if graph.n_nodes <= MAX_DRAWN_PROCESSES:
        drawn, node_class, labels, sizes, widths = _process_view(graph, classes)
        ax.set_title(
            f"system graph of {graph.name}: {format_count(graph.n_nodes, 'node')}, "
            f"{format_count(graph.n_edges, 'edge')}",
            fontsize=9,
        )
    else:
        drawn, node_class, labels, sizes, widths = _type_view(graph, classes)
        ax.set_title(
            f"system graph of {graph.name}, one node per node type "
            f"({format_count(graph.n_nodes, 'node')}, "
            f"{format_count(graph.n_edges, 'edge')})",
            fontsize=9,
        )

    position = nx.spring_layout(drawn, seed=0)
    nodes = list(drawn.nodes)
    nx.draw_networkx_nodes(
        drawn,
        position,
        ax=ax,
        nodelist=nodes,
        node_size=[sizes[n] for n in nodes],
        node_color=[_CLASS_COLOURS[node_class[n]] for n in nodes],
        edgecolors="#333333",
        linewidths=0.6,
    )
    edges = list(drawn.edges(keys=True, data=True))
    nx.draw_networkx_edges(
        drawn,
        position,
        ax=ax,
        edgelist=[(u, v, k) for u, v, k, _ in edges],
        edge_color=[_EDGE_COLOURS[d["kind"]] for *_, d in edges],
        width=[widths.get((u, v, k), 1.0) for u, v, k, _ in edges],
        arrows=True,
        arrowsize=8,
        node_size=[sizes[n] for n in nodes],
    )
    if labels:
        nx.draw_networkx_labels(drawn, position, labels=labels, ax=ax, font_size=7)

    used = sorted(set(node_class.values()))
    handles = [
        Line2D(
            [],
            [],
            marker="o",
            linestyle="",
            markerfacecolor=_CLASS_COLOURS[c],
            markeredgecolor="#333333",
            label=c,
        )
        for c in used
    ]
    handles += [Line2D([], [], color=_EDGE_COLOURS[k], label=k) for k in EDGE_KINDS]
    ax.legend(handles=handles, fontsize=7, loc="upper left")
    return figure


def _process_view(graph: SystemGraph, classes: dict[str, str]):
    drawn = graph.to_networkx()
    keys = [graph.node_key(i) for i in range(graph.n_nodes)]
    node_class = {k: _node_class(graph, i, classes) for i, k in enumerate(keys)}
    show_labels = graph.n_nodes <= 60
    labels = {k: drawn.nodes[k]["node_type"] for k in keys} if show_labels else {}
    sizes = {k: 160 for k in keys}
    return drawn, node_class, labels, sizes, {}


def _type_view(graph: SystemGraph, classes: dict[str, str]):
    types = graph.node_types()
    node_class: dict[str, str] = {}
    counts = Counter(types.tolist())
    for i in range(graph.n_nodes):
        node_class.setdefault(types[i], _node_class(graph, i, classes))
    links = Counter(
        zip(
            types[graph.src].tolist(),
            types[graph.dst].tolist(),
            (EDGE_KINDS[k] for k in graph.edge_kind.tolist()),
            strict=True,
        )
    )
    drawn = nx.MultiDiGraph()
    drawn.add_nodes_from(counts)
    widths = {}
    for (u, v, kind), n in links.items():
        key = drawn.add_edge(u, v, kind=kind)
        widths[(u, v, key)] = 0.5 + np.log10(n)
    labels = {t: f"{t} ({counts[t]})" for t in counts}
    sizes = {t: 80 + 40 * np.sqrt(counts[t]) for t in counts}
    return drawn, node_class, labels, sizes, widths


def _index_html(
    model: Model,
    figures,
    r2_name: str,
    graph: SystemGraph | None,
    graph_name: str | None,
    runs: Sequence[ReportRun],
    classes: dict[str, str],
    title: str,
) -> str:
    e = html.escape
    training = model.training
    params = model.model.get("params", {})
    parts = [
        "<!DOCTYPE html>",
        "<html><head><meta charset='utf-8'>",
        f"<title>{e(title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:72em}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;"
        "text-align:right}td:first-child,th:first-child{text-align:left}"
        "img{max-width:100%}.grid img{width:32em}</style>",
        "</head><body>",
        f"<h1>{e(title)}</h1>",
        "<ul>",
        f"<li>embedding: {e(model.embedding['name'])}, model: {e(model.model['name'])}"
        f" (R^2 threshold {e(str(params.get('r2_threshold', '-')))})</li>",
        f"<li>training runs: {training.get('runs')}, requests "
        f"{min(training.get('requests') or [0])} to {max(training.get('requests') or [0])}</li>",
        f"<li>kept features: {len(model.kept_features)} of {len(model.features)}</li>",
        f"<li>driver processes left out: {e(str(training.get('driver_excluded')))}</li>",
        "</ul>",
    ]
    if model.degenerate:
        parts.append(
            f"<p><b>Fixed workload:</b> every training run had "
            f"{e(format_count(training.get('fixed_requests'), 'request'))}, so each "
            "feature is "
            "expected at a constant and only stable features are kept.</p>"
        )

    parts.append("<h2>Kept features</h2><div class='grid'>")
    parts += [f"<img src='{e(f)}' alt='{e(n)}'>" for n, f in figures]
    parts.append("</div>")

    if runs:
        parts.append(
            "<h2>Runs</h2><table><tr><th>run</th><th>requests</th>"
            "<th>verdict</th><th>deviating features</th></tr>"
        )
        for r in runs:
            deviating = ", ".join(c.feature for c in r.detection.deviating())
            verdict = "anomalous" if r.detection.anomalous else "normal"
            parts.append(
                f"<tr><td>{e(r.name)}</td><td>{r.requests}</td><td>{verdict}</td>"
                f"<td>{e(deviating)}</td></tr>"
            )
        parts.append("</table>")

    parts.append(
        f"<h2>All features</h2><img src='{e(r2_name)}' alt='R^2 of the features'>"
    )
    parts.append(
        "<h3>Rejected features</h3><table><tr><th>feature</th><th>R^2</th>"
        "<th>slope</th><th>intercept</th><th>reason</th></tr>"
    )
    for f in sorted((f for f in model.features if not f.kept), key=lambda f: f.name):
        r2 = "-" if f.r2 is None else f"{f.r2:.3f}"
        parts.append(
            f"<tr><td>{e(f.name)}</td><td>{r2}</td><td>{f.slope:.3g}</td>"
            f"<td>{f.intercept:.3g}</td><td>{e(f.reason or '')}</td></tr>"
        )
    parts.append("</table>")

    if graph_name is not None and graph is not None:
        parts.append(
            f"<h2>System graph of {e(graph.name)}</h2>"
            f"<img src='{e(graph_name)}' alt='system graph'>"
        )
    if classes:
        parts.append(
            "<h2>Node types by class</h2><table><tr><th>node type</th>"
            "<th>class</th></tr>"
        )
        parts += [
            f"<tr><td>{e(t)}</td><td>{e(c)}</td></tr>"
            for t, c in sorted(classes.items())
        ]
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
