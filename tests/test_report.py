"""The model report: one figure per kept feature, an R^2 chart, a graph, index.html."""

from __future__ import annotations

import re

import numpy as np

from learn_workloads import shell_workload_rows
from syslrn.embed import BagOfNodes
from syslrn.evaluate.report import MAX_DRAWN_PROCESSES, ReportRun, write_report
from syslrn.graph import build_graph
from syslrn.model import LinearModel, train_model
from syslrn.trace import table_from_rows

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _model_and_graphs(levels=(2, 4, 6, 8, 10)):
    graphs = [
        build_graph(
            table_from_rows(shell_workload_rows(r, 2, background_jobs=r % 3)),
            name=f"run-{r}",
        )
        for r in levels
    ]
    embedding = BagOfNodes()
    rows = [embedding.features(g) for g in graphs]
    model = train_model(
        rows,
        list(levels),
        estimator=LinearModel(),
        embedding={"name": embedding.name, "params": embedding.get_params()},
        describe=embedding.describe,
    )
    model.training["classes"] = {
        "worker": "workload-driven",
        "sh": "workload-driven",
        "cron": "system-background",
    }
    return model, graphs, rows


def _png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    assert len(data) > 1000, path
    return data


def test_report_writes_every_figure(tmp_path):
    model, graphs, rows = _model_and_graphs()
    runs = [
        ReportRun(g.name, r, row, model.detect(row, r))
        for g, r, row in zip(graphs, (2, 4, 6, 8, 10), rows, strict=True)
    ]
    index = write_report(model, tmp_path / "report", runs, graphs[0])

    kept = [f.name for f in model.kept_features]
    features = sorted((tmp_path / "report").glob("feature-*.png"))
    assert len(features) == len(kept) == 3
    for path in features:
        _png(path)
    _png(tmp_path / "report" / "r2.png")
    _png(tmp_path / "report" / "graph.png")

    html = index.read_text()
    images = re.findall(r"<img src='([^']+)'", html)
    assert sorted(images) == sorted(
        [p.name for p in features] + ["r2.png", "graph.png"]
    )
    for name in (f.name for f in model.features if not f.kept):
        assert f"<td>{name}</td>" in html
    assert "run-10" in html


def test_report_without_runs(tmp_path):
    model, _, _ = _model_and_graphs()
    index = write_report(model, tmp_path / "out")

    assert index.exists()
    assert not (tmp_path / "out" / "graph.png").exists()
    assert len(list((tmp_path / "out").glob("feature-*.png"))) == 3


def test_large_graph_drawn_by_node_type(tmp_path):
    model, _, _ = _model_and_graphs()
    graph = build_graph(
        table_from_rows(shell_workload_rows(MAX_DRAWN_PROCESSES, 1)), name="big"
    )
    assert graph.n_nodes > MAX_DRAWN_PROCESSES
    write_report(model, tmp_path / "big", (), graph)

    _png(tmp_path / "big" / "graph.png")
    assert (
        "system graph of big" in (tmp_path / "big" / "index.html").read_text().lower()
    )


def test_report_marks_fixed_workload(tmp_path):
    rows = [{"count:worker": 10.0}, {"count:worker": 10.0}, {"count:worker": 11.0}]
    model = train_model(
        rows,
        [5] * 3,
        estimator=LinearModel(),
        embedding={"name": "bag-of-nodes"},
        describe=BagOfNodes().describe,
    )
    html = write_report(model, tmp_path / "fixed").read_text()

    assert model.degenerate
    assert "Fixed workload" in html
    assert np.isclose(model.kept_features[0].slope, 0.0)
    _png(tmp_path / "fixed" / "feature-000-count_worker.png")
