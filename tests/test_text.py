"""Counted nouns in output: singular for one, plural otherwise."""

from __future__ import annotations

import pytest

from syslrn.text import format_count


@pytest.mark.parametrize(
    "count, expected", [(0, "0 requests"), (1, "1 request"), (2, "2 requests")]
)
def test_format_count_regular_noun(count, expected):
    assert format_count(count, "request") == expected


def test_format_count_irregular_plural():
    assert format_count(1, "process", "processes") == "1 process"
    assert format_count(3, "process", "processes") == "3 processes"


def test_format_count_compound_noun():
    assert format_count(1, "kept feature") == "1 kept feature"
    assert format_count(4, "kept feature") == "4 kept features"


def _one_feature_model():
    from syslrn.model import FeatureEntry, Model

    feature = FeatureEntry(
        name="count:worker",
        node_type="worker",
        stat="count",
        kept=True,
        r2=1.0,
        slope=2.0,
        intercept=0.0,
        tolerance=1.0,
    )
    return Model(
        embedding={"name": "bag-of-nodes", "params": {}},
        model={"name": "linear", "params": {}},
        features=[feature],
    )


def test_detect_line_one_request():
    from syslrn.commands.detect import format_detection

    detection = _one_feature_model().detect({"count:worker": 2.0}, 1)

    line = format_detection("run", detection)
    assert line == "run: normal (1 request, 0 of 1 kept feature outside tolerance)"


def test_monitor_window_one_request():
    from syslrn.monitor.kernel import WindowFeatures
    from syslrn.monitor.online import Verdict

    window = WindowFeatures(epoch=3, open_ns=0, close_ns=1, requests=1, values={})
    verdict = Verdict(window, _one_feature_model().detect({"count:worker": 2.0}, 1))

    assert verdict.human() == "window 3 (1 request): normal"


def test_trace_summary_one_lost_event():
    from syslrn.trace.summary import _format_lost

    text = _format_lost({"reserve_failed": 1})
    assert text.startswith("1 event (ring buffer reservations failed")
