"""Per-subset distribution of unified GUI actions."""

from __future__ import annotations

import pytest

from etl.schema import SAMPLES
from etl.stages.gui_stats import action_distribution


def _sample(sample_id, subset, answers):
    return (sample_id, subset, "Grounding & Counting", subset, [], [("q", a) for a in answers], ("f", None, 0))


def test_action_distribution_counts_unified_calls_per_subset_and_skips_prose(spark):
    samples = spark.createDataFrame(
        [
            _sample("a", "gui", ["click(x=0.5, y=0.25)\ntype(text='hello')", "click(x=0.1, y=0.9)"]),
            _sample("b", "gui", ["navigate_back()", "not a call at all"]),
            _sample("c", "photos", ["A red square on a white background."]),
        ],
        SAMPLES,
    )
    rows = {(r["subset"], r["action"]): (r["count"], r["share"]) for r in action_distribution(samples).collect()}
    assert set(rows) == {("gui", "click"), ("gui", "type"), ("gui", "navigate_back")}
    assert rows[("gui", "click")] == (2, pytest.approx(0.5))
    assert rows[("gui", "type")] == (1, pytest.approx(0.25)) and rows[("gui", "navigate_back")][0] == 1
