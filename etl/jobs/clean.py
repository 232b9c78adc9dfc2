"""`finevision clean`: bronze_samples -> silver_samples (+ quarantine)."""

from __future__ import annotations

import logging
from dataclasses import replace

from pyspark.sql import functions as F

from etl import tables
from etl.confs import session_conf
from etl.reuse import reused
from etl.runs import PipelineRun
from etl.schema import SAMPLES
from etl.specs import rules_from, ship_to_executors
from etl.stages.clean import clean_samples, silver_rows
from etl.stages.quarantine import rejected_rows

log = logging.getLogger("finevision")
ARROW_BATCH_ROWS = "spark.sql.execution.arrow.maxRecordsPerBatch"


def run(run: PipelineRun) -> None:
    spark, config = run.spark, run.config
    silver_ref, quarantine_ref = run.table("silver_samples"), run.table("quarantine")
    with run.stage("clean") as report:
        todo = run.read_input(report, "bronze_samples")
        # Incremental: skip samples already cleaned (in silver) or already rejected by this stage.
        for done in _already_cleaned(run, silver_ref, quarantine_ref):
            todo = todo.join(done, "sample_id", "left_anti")
        rules = rules_from(config)
        if config.assets.dir is None:  # a driver-local file: ship it (prepared assets are on shared storage)
            rules = replace(rules, tokenizer_json=ship_to_executors(spark, rules.tokenizer_json))
        # small Arrow batches for the image UDF, for this job only: later stages keep their own
        with session_conf(spark, {ARROW_BATCH_ROWS: str(config.clean.arrow_batch_rows)}):
            # the image UDF runs once; on serverless its rows go to a scratch table
            with run.scratch() as scratch, reused(clean_samples(todo, rules), scratch) as cleaned:
                summary = (
                    cleaned.groupBy(F.col("reject_reason").alias("reason"))
                    .agg(
                        F.count("*").alias("n"),
                        F.sum("turns_dropped_empty").alias("empty"),
                        F.sum("turns_dropped_too_long").alias("too_long"),
                        F.sum("images_resized").alias("resized"),
                    )
                    .collect()
                )
                report.count_outcomes({r["reason"]: r["n"] for r in summary})
                report.counters = {
                    "turns_dropped_empty": sum(r["empty"] or 0 for r in summary),
                    "turns_dropped_too_long": sum(r["too_long"] or 0 for r in summary),
                    "images_resized": sum(r["resized"] or 0 for r in summary if r["reason"] is None),
                }
                commit = run.commit("clean")
                report.output_versions["silver_samples"] = tables.merge_insert(
                    spark, silver_ref, silver_rows(cleaned), ["sample_id"], commit, SAMPLES
                )
                run.write_quarantine(report, rejected_rows(cleaned), commit)


def _already_cleaned(run: PipelineRun, silver_ref, quarantine_ref):
    spark = run.spark
    if tables.exists(spark, silver_ref):
        yield tables.read(spark, silver_ref).select("sample_id")
    if tables.exists(spark, quarantine_ref):
        yield tables.read(spark, quarantine_ref).filter("stage = 'clean'").select("sample_id")
