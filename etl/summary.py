"""A plain-text summary of the lakehouse: each table's location, version and row count."""

from __future__ import annotations

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from etl import tables
from etl.config import PipelineConfig

TABLES = (
    "bronze_samples",
    "silver_samples",
    "benchmark_items",
    "quarantine",
    "image_embeddings",
    "contamination_hits",
    "contamination_rates",
    "near_duplicate_clusters",
    "action_stats",
    "turn_ratings",
    "rating_distribution",
    "subset_stats",
    "diversity_metrics",
    "removed_samples",
    "gold_samples",
    "pipeline_runs",
)


def table_summary(spark: SparkSession, config: PipelineConfig) -> str:
    lines = [f"{'table':<22} {'version':>7} {'rows':>8}  location"]
    for name in TABLES:
        ref = tables.TableRef.of(config, name)
        version = tables.current_version(spark, ref)
        if version is None:
            lines.append(f"{name:<22} {'-':>7} {'-':>8}  (not written)")
            continue
        rows = tables.read(spark, ref).count()
        lines.append(f"{name:<22} {version:>7} {rows:>8}  {ref}")
    quarantine = tables.TableRef.of(config, "quarantine")
    if tables.exists(spark, quarantine):
        lines.append("quarantine by stage and reason:")
        for row in (
            tables.read(spark, quarantine).groupBy("stage", "reason").count().orderBy("stage", "reason").collect()
        ):
            lines.append(f"  {row['stage']:<8} {row['reason']:<22} {row['count']:>6}")
    actions = tables.TableRef.of(config, "action_stats")
    if tables.exists(spark, actions):
        lines.append("GUI actions by subset:")
        for row in tables.read(spark, actions).orderBy("subset", F.desc("count")).collect():
            lines.append(f"  {row['subset']:<14} {row['action']:<14} {row['count']:>5} ({row['share']:.0%})")
    return "\n".join(lines)
