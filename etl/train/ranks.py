"""Average rank over compared runs, as the FineVision paper's figures compare models: per
benchmark the runs are ranked by score (the best 1), then each run's ranks are averaged."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Mapping

from etl.train.metrics import METRIC_NAMES


def ranks(scores: Mapping[str, float]) -> dict[str, float]:
    """Run -> rank on one benchmark, higher scores first from 1; tied runs share the average of the
    ranks they span (two runs tied for first both get 1.5)."""
    ordered = sorted(scores.values(), reverse=True)
    first = {score: ordered.index(score) + 1 for score in ordered}
    return {run: first[score] + (ordered.count(score) - 1) / 2 for run, score in scores.items()}


def average_ranks(scores: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Run -> its mean rank over the benchmarks (`scores`: run -> benchmark -> score, higher is
    better). A run is ranked on the benchmarks it has a score for, against the runs that have one."""
    by_benchmark: dict[str, dict[str, float]] = defaultdict(dict)
    for run, benchmarks in scores.items():
        for benchmark, score in benchmarks.items():
            by_benchmark[benchmark][run] = score
    per_run: dict[str, list[float]] = defaultdict(list)
    for runs in by_benchmark.values():
        for run, rank in ranks(runs).items():
            per_run[run].append(rank)
    return {run: statistics.mean(per_run[run]) for run in scores if per_run[run]}


def reported_scores(metrics: Mapping[str, float]) -> dict[str, float]:
    """`<benchmark>/<score>` -> value from a run's MLflow metrics `eval/<benchmark>/<score>` over all
    items: a benchmark's official aggregates (etl/train/aggregates.py) where it has them, else its
    metric's mean. Contaminated and clean splits, item counts and per-part rows (ScreenSpot's
    platforms) are left out."""
    by_benchmark: dict[str, dict[str, float]] = defaultdict(dict)
    for key, value in metrics.items():
        parts = key.split("/")
        if len(parts) == 3 and parts[0] == "eval" and parts[2] != "items" and "." not in parts[2]:
            by_benchmark[parts[1]][parts[2]] = value
    reported = {}
    for benchmark, values in by_benchmark.items():
        official = {name: v for name, v in values.items() if name not in METRIC_NAMES}
        for name, value in (official or values).items():
            reported[f"{benchmark}/{name}"] = value
    return reported
