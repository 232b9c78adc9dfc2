"""`finevision clean`: bronze_samples -> silver_samples (+ quarantine)."""

from __future__ import annotations

import hashlib
import logging
import shutil
from dataclasses import replace
from pathlib import Path

from pyspark import StorageLevel
from pyspark.sql import functions as F

from etl import assets, tables
from etl.confs import session_conf
from etl.runs import PipelineRun
from etl.schema import QUARANTINE, SAMPLES
from etl.session import is_connect
from etl.stages.clean import CleanRules, clean_samples, silver_rows
from etl.stages.quarantine import quarantine_rows, rejected_rows
from udfs.images import ImageRules
from udfs.tokens import prepare_tokenizer

log = logging.getLogger("finevision")
ARROW_BATCH_ROWS = "spark.sql.execution.arrow.maxRecordsPerBatch"


def rules_from(config) -> CleanRules:
    clean = config.clean
    tok = clean.tokenizer
    return CleanRules(
        images=ImageRules(clean.max_side, clean.max_pixels, clean.jpeg_quality),
        max_turn_tokens=clean.max_turn_tokens,
        tokenizer_json=assets.tokenizer_json(config)
        or prepare_tokenizer(tok.path, tok.gguf_package, tok.gguf_file, tok.cache_dir),
    )


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
            cleaned = clean_samples(todo, rules).persist(StorageLevel.MEMORY_AND_DISK)
            try:
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
                report.rows_in = sum(r["n"] for r in summary)
                report.rows_out = sum(r["n"] for r in summary if r["reason"] is None)
                report.dropped = {r["reason"]: r["n"] for r in summary if r["reason"] is not None}
                report.counters = {
                    "turns_dropped_empty": sum(r["empty"] or 0 for r in summary),
                    "turns_dropped_too_long": sum(r["too_long"] or 0 for r in summary),
                    "images_resized": sum(r["resized"] or 0 for r in summary if r["reason"] is None),
                }
                commit = run.commit("clean")
                report.output_versions["silver_samples"] = tables.merge_insert(
                    spark, silver_ref, silver_rows(cleaned), ["sample_id"], commit, SAMPLES
                )
                report.output_versions["quarantine"] = tables.merge_insert(
                    spark,
                    quarantine_ref,
                    quarantine_rows(rejected_rows(cleaned), "clean", run.run_id),
                    ["quarantine_id"],
                    commit,
                    QUARANTINE,
                )
            finally:
                cleaned.unpersist()


def _already_cleaned(run: PipelineRun, silver_ref, quarantine_ref):
    spark = run.spark
    if tables.exists(spark, silver_ref):
        yield tables.read(spark, silver_ref).select("sample_id")
    if tables.exists(spark, quarantine_ref):
        yield tables.read(spark, quarantine_ref).filter("stage = 'clean'").select("sample_id")


def ship_to_executors(spark, path: str) -> str:
    """Ship the driver's file to every executor (`SparkContext.addFile`; over Spark Connect the
    session's file artifacts) under a name made from its content, and return the driver-side path
    of that name: executors that cannot read the path open the shipped copy by its name
    (`udfs.tokens.tokenizer_file`). Content-addressed names never collide, since Spark refuses a
    second file of the same name with other content."""
    source = Path(path)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    named = source.with_name(f"{source.stem}-{digest}{source.suffix}")
    if not named.exists():
        shutil.copyfile(source, named)
    if is_connect(spark):
        spark.addArtifacts(str(named), file=True)
    else:
        spark.sparkContext.addFile(str(named))
    return str(named)
