"""`finevision analyze`: analytics tables over silver_samples (now: GUI action distribution)."""

from __future__ import annotations

from pyspark.sql import functions as F

from etl import tables
from etl.runs import PipelineRun
from etl.stages.gui_stats import ACTION_STATS, action_distribution


def run(run: PipelineRun) -> None:
    with run.stage("analyze") as report:
        silver = run.read_input(report, "silver_samples")
        stats = action_distribution(silver).persist()
        rows = stats.agg(F.count("*").alias("n"), F.countDistinct("subset").alias("subsets")).first()
        report.rows_in = report.rows_out = rows["n"]
        report.counters = {"gui_subsets": rows["subsets"]}
        report.output_versions["action_stats"] = tables.overwrite(
            run.spark, run.table("action_stats"), stats, run.commit("analyze"), ACTION_STATS
        )
        stats.unpersist()
