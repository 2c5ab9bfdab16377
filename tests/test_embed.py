"""Embeddings of system graphs: bag-of-nodes and Weisfeiler-Lehman counts."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone

from learn_workloads import shell_workload_rows
from syslrn.embed import (
    EMBEDDINGS,
    BagOfNodes,
    GraphEmbedding,
    WeisfeilerLehman,
    make_embedding,
    register_embedding,
)
from syslrn.errors import SyslrnError
from syslrn.graph import build_graph
from syslrn.trace import Trace, table_from_rows
from syslrn.trace.schema import FLAG_DRIVER


def _shell_graph(requests, children, **kwargs):
    return build_graph(
        table_from_rows(shell_workload_rows(requests, children, **kwargs))
    )


def test_bag_of_nodes_counts_and_degrees():
    graph = _shell_graph(3, 2, background_jobs=2, journal_connects=1)

    assert BagOfNodes().features(graph) == {
        "count:init": 1.0,
        "degree:init": 0.0,
        "count:systemd-journald": 1.0,
        "degree:systemd-journald": 1.0,
        "count:cron": 1.0,
        "degree:cron": 2.0,
        "count:sh": 1.0,
        "degree:sh": 6.0,
        "count:worker": 6.0,
        "degree:worker": 6.0,
        "count:backup": 2.0,
        "degree:backup": 3.0,
    }


def _driven_rows():
    # A server accepts two connections from a driver client and one from an
    # untraced host.
    client = [
        dict(
            ts_ns=2,
            host="a",
            kind="exec",
            pid=5,
            start_ns=50,
            comm="curl",
            filename="/usr/bin/curl",
            flags=FLAG_DRIVER,
        ),
    ]
    server = [
        dict(ts_ns=1, host="a", kind="snapshot", pid=1, start_ns=10, comm="httpd")
    ]
    for i, port in enumerate((40000, 40001)):
        client.append(
            dict(
                ts_ns=3 + i,
                host="a",
                kind="connect",
                pid=5,
                start_ns=50,
                family="inet",
                laddr="127.0.0.1",
                lport=port,
                raddr="127.0.0.1",
                rport=80,
                netns=1,
                flags=FLAG_DRIVER,
            )
        )
        server.append(
            dict(
                ts_ns=3 + i,
                host="a",
                kind="accept",
                pid=1,
                start_ns=10,
                family="inet",
                laddr="127.0.0.1",
                lport=80,
                raddr="127.0.0.1",
                rport=port,
                netns=1,
            )
        )
    server.append(
        dict(
            ts_ns=9,
            host="a",
            kind="accept",
            pid=1,
            start_ns=10,
            family="inet",
            laddr="10.0.0.1",
            lport=80,
            raddr="10.0.0.7",
            rport=50000,
            netns=1,
        )
    )
    return client + server


def test_driven_run_leaves_driver_out():
    trace = Trace(
        table=table_from_rows(_driven_rows()), meta={"labels": {"driven": "true"}}
    )
    graph = build_graph(trace)

    assert BagOfNodes().features(graph) == {"count:httpd": 1.0, "degree:httpd": 3.0}


def test_include_driver_keeps_driver():
    trace = Trace(
        table=table_from_rows(_driven_rows()), meta={"labels": {"driven": "true"}}
    )
    features = BagOfNodes(include_driver=True).features(build_graph(trace))

    assert features["count:curl"] == 1.0
    assert features["degree:curl"] == 2.0


def test_plain_run_counts_driver():
    features = BagOfNodes().features(build_graph(table_from_rows(_driven_rows())))

    assert features["count:curl"] == 1.0


def test_external_nodes_make_no_features_by_default():
    graph = build_graph(table_from_rows(_driven_rows()))

    assert not any("external" in name for name in BagOfNodes().features(graph))
    included = BagOfNodes(include_external=True).features(graph)
    assert included["count:external"] == 1.0
    assert included["degree:external"] == 1.0


def test_fit_transform_aligns_runs():
    small = _shell_graph(1, 1)
    large = _shell_graph(4, 2, background_jobs=1)
    embedding = BagOfNodes().fit([small, large])
    names = list(embedding.get_feature_names_out())
    X = embedding.transform([small, large])

    assert names == sorted(names)
    assert "count:backup" in names
    assert X.shape == (2, len(names))
    assert X[0, names.index("count:backup")] == 0.0
    assert X[1, names.index("count:worker")] == 8.0
    np.testing.assert_array_equal(embedding.fit_transform([small, large]), X)


def test_transform_drops_unseen_types():
    embedding = BagOfNodes().fit([_shell_graph(1, 1)])
    X = embedding.transform([_shell_graph(1, 1, background_jobs=3)])

    assert "count:backup" not in embedding.feature_names_
    assert X.shape == (1, len(embedding.feature_names_))


def test_embeddings_are_sklearn_estimators():
    for embedding in (BagOfNodes(include_driver=True), WeisfeilerLehman(iterations=3)):
        copy = clone(embedding)
        assert copy.get_params() == embedding.get_params()
        assert copy is not embedding


def test_wl_iteration_zero_equals_counts():
    graph = _shell_graph(3, 2, background_jobs=2, journal_connects=1)
    wl = WeisfeilerLehman(iterations=0).features(graph)
    bag = BagOfNodes().features(graph)

    assert wl == {f"wl0:{k[6:]}": v for k, v in bag.items() if k.startswith("count:")}


def test_wl_labels_are_stable_across_runs():
    small = WeisfeilerLehman().features(_shell_graph(2, 1))
    large = WeisfeilerLehman().features(_shell_graph(5, 1))
    worker_small = {k: v for k, v in small.items() if k.startswith("wl1:worker:")}
    worker_large = {k: v for k, v in large.items() if k.startswith("wl1:worker:")}

    # Every worker has the same neighbourhood (forked by the shell), in both runs.
    assert len(worker_small) == 1
    assert worker_small.keys() == worker_large.keys()
    assert list(worker_small.values()) == [2.0]
    assert list(worker_large.values()) == [5.0]


def test_wl_separates_neighbourhoods():
    # Two backup jobs: one connects to journald, one does not.
    features = WeisfeilerLehman(iterations=1).features(
        _shell_graph(1, 1, background_jobs=2, journal_connects=1)
    )
    backups = {k: v for k, v in features.items() if k.startswith("wl1:backup:")}

    assert sorted(backups.values()) == [1.0, 1.0]


def test_wl_describe_returns_stat_and_type():
    wl = WeisfeilerLehman()

    assert wl.describe("wl0:systemd-journald") == ("wl0", "systemd-journald")
    assert wl.describe("wl2:sh:0123456789ab") == ("wl2", "sh")


def test_registry_makes_and_rejects():
    assert isinstance(
        make_embedding("bag-of-nodes", {"include_driver": True}), BagOfNodes
    )
    with pytest.raises(SyslrnError, match="embedding 'nope' is unknown"):
        make_embedding("nope")
    with pytest.raises(SyslrnError, match="invalid parameters"):
        make_embedding("wl", {"depth": 3})


def test_registry_accepts_new_embedding():
    class ProcessCount(GraphEmbedding):
        name = "process-count"

        def features(self, graph):
            return {"count:all": float((~graph.external).sum())}

    register_embedding(ProcessCount)
    try:
        embedding = make_embedding("process-count")
        assert embedding.fit_transform([_shell_graph(2, 1)]).tolist() == [[6.0]]
    finally:
        EMBEDDINGS.pop("process-count")
