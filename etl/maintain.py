"""`finevision maintain`: upkeep of path-based tables, which nothing else compacts or cleans.

Per table that exists: `OPTIMIZE` (compacting the small files every incremental MERGE or append
leaves), clustered with `ZORDER BY (sample_id)` where readers reach rows by sample (joins and key
ranges on `sample_id`), then `VACUUM` with the table's own retention
(`delta.deletedFileRetentionDuration`: Delta's 7 days, or `export.retention_days` on gold_samples,
so a version a training run or a release card pins stays readable that long).

Tables in Unity Catalog are left alone: there predictive optimisation runs OPTIMIZE and VACUUM on
managed tables itself, and honours the same retention properties (docs/clusters.md, "Table upkeep").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pyspark.sql import SparkSession

from etl import tables
from etl.config import PipelineConfig
from etl.jobs import STAGES

log = logging.getLogger("finevision")
# Read by sample: joined on sample_id (export, analyze, review) or merged by sample_id range (rate).
BY_SAMPLE = (
    "bronze_samples",
    "silver_samples",
    "gold_samples",
    "turn_ratings",
    "contamination_hits",
    "removed_samples",
)
OTHER_TABLES = ("pipeline_runs", "rate_pending")


@dataclass(frozen=True)
class Upkeep:
    table: str
    optimized: bool
    zorder: bool
    vacuumed: bool


def table_names() -> list[str]:
    """Every table the pipeline writes, in stage order."""
    names = [name for stage in STAGES for name in stage.writes]
    return list(dict.fromkeys([*names, *OTHER_TABLES]))


def maintain(spark: SparkSession, config: PipelineConfig, names: list[str] | None = None) -> list[Upkeep]:
    """OPTIMIZE and VACUUM each existing path table of `names` (default: all); what was done."""
    if config.catalog:
        raise ValueError(
            f"tables live in the catalog {config.catalog}: Unity Catalog's predictive optimisation "
            "runs OPTIMIZE and VACUUM on managed tables (see docs/clusters.md, 'Table upkeep')"
        )
    done = []
    for name in names or table_names():
        ref = tables.TableRef.of(config, name)
        if not tables.exists(spark, ref):
            continue
        zorder = name in BY_SAMPLE and "sample_id" in spark.sql(f"SELECT * FROM {ref.sql} LIMIT 0").columns
        spark.sql(f"OPTIMIZE {ref.sql}" + (" ZORDER BY (sample_id)" if zorder else ""))
        spark.sql(f"VACUUM {ref.sql}")  # the table's delta.deletedFileRetentionDuration
        log.info("[maintain] %s: optimized%s, vacuumed", name, " (z-ordered by sample_id)" if zorder else "")
        done.append(Upkeep(name, optimized=True, zorder=zorder, vacuumed=True))
    return done
