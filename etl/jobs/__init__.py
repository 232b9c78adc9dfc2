"""Jobs: thin I/O around the stages. Each reads pinned table versions, runs pure transforms and
writes through `etl.tables`, reporting counts to the run log. `STAGES` is the pipeline, in order."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class StageJob:
    name: str
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    module: str  # etl.jobs.<module> has run(run: PipelineRun)

    def runner(self) -> Callable:
        from importlib import import_module

        return import_module(f"etl.jobs.{self.module}").run


STAGES = (
    StageJob("ingest", (), ("bronze_samples", "benchmark_items", "quarantine"), "ingest"),
    StageJob("clean", ("bronze_samples",), ("silver_samples", "quarantine"), "clean"),
    StageJob("embed", ("silver_samples", "benchmark_items"), ("image_embeddings", "quarantine"), "embed"),
    StageJob(
        "decontaminate",
        ("silver_samples", "benchmark_items", "image_embeddings"),
        ("contamination_hits", "contamination_rates", "removed_samples"),
        "decontaminate",
    ),
    StageJob("dedup", ("silver_samples", "image_embeddings"), ("near_duplicate_clusters", "removed_samples"), "dedup"),
    StageJob("rate", ("silver_samples",), ("turn_ratings", "rating_distribution"), "rate"),
    StageJob(
        "export",
        ("silver_samples", "contamination_hits", "near_duplicate_clusters", "removed_samples", "turn_ratings"),
        ("gold_samples",),
        "export",
    ),
    StageJob(
        "analyze",
        ("silver_samples", "image_embeddings", "contamination_hits", "near_duplicate_clusters", "turn_ratings"),
        ("action_stats", "subset_stats", "diversity_metrics"),
        "analyze",
    ),
)
STAGES_BY_NAME = {stage.name: stage for stage in STAGES}
