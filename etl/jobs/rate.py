"""`finevision rate`: every turn of silver_samples scored 1-5 on FineVision's four axes by the
configured judges -> turn_ratings, rating_distribution.

Resumable: only (sample, turn, axis, judge, prompt) combinations without a settled rating are
sent to a judge, in chunks of about `rate.commit_rows` that are each committed, so a killed run
loses at most one chunk and the next run picks up the rest. Failed requests (timeouts, 429, 5xx)
are recorded with their error and tried again by the next run.

Silver is read a fixed number of times per run, however many chunks: the pending keys are computed
once, their texts and images joined once into `rate_pending` (partitioned by chunk), and each chunk
reads only its partition of that.
"""

from __future__ import annotations

import logging
import math

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from etl import tables
from etl.config import PipelineConfig
from etl.resources import default_parallelism, stage_resource_profile, task_cpus
from etl.reuse import reused
from etl.runs import PipelineRun
from etl.schema import RATE_PENDING, RATING_DISTRIBUTION, TURN_RATINGS
from etl.specs import axis_judges, configured_judges
from etl.stages import rate as stage
from udfs.judge import (
    NO_IMAGE,
    NO_VLM_JUDGE,
    REQUEST_FAILED,
)

log = logging.getLogger("finevision")
RATING_CONSTRAINTS = {"score_is_1_to_5": "score IS NULL OR score BETWEEN 1 AND 5"}
# a matched rating is replaced only when it was a failed request (a retry may now have a score)
REPLACE_FAILED = f"t.score IS NULL AND t.error LIKE '{REQUEST_FAILED}%'"


def run(run: PipelineRun) -> None:
    spark, settings = run.spark, run.config.rate
    profile = stage_resource_profile(spark, "rate")  # a GPU per task on a GPU cluster, else None
    assignments = axis_judges(run.config, task_cpus(spark, profile))
    for a in assignments:
        log.info("[rate] %s: judge %s, prompt %s", a.axis, a.judge_model, a.prompt_hash)
    with run.stage("rate") as report:
        silver = run.read_input(report, "silver_samples")
        target = run.table("turn_ratings")
        existing = tables.read(spark, target) if tables.exists(spark, target) else None
        # The pending keys, once per run (ids only), then the judges' inputs joined to them once and
        # written by chunk: each chunk reads its own rows of rate_pending, never silver again.
        requests = stage.turn_requests(silver, assignments, settings.max_turns_per_subset)
        chunks: list[tuple[DataFrame, tuple[str, str]]] = []
        # ids from pinned silver in a fixed order: recomputed on serverless, same rows
        with reused(requests) as requests:
            todo = stage.pending_requests(requests, existing)
            total, pending = requests.count(), todo.count()
            report.rows_in = pending
            report.counters = {"turn_axes": total, "already_rated": total - pending}
            n_chunks = max(1, math.ceil(pending / settings.commit_rows))
            log.info("[rate] %d of %d (turn, axis) pairs to rate, in about %d chunk(s)", pending, total, n_chunks)
            if pending:
                work = stage.pending_work(silver, todo, assignments, n_chunks)
                chunks = _write_work(run, report, work)
        tasks = settings.partitions or default_parallelism(spark)
        for number, (rows, id_range) in enumerate(chunks, 1):
            rated = stage.rate_turns(rows, assignments, run.run_id, settings.max_text_chars, tasks, profile)
            _rate_chunk(run, report, rated, id_range)
            log.info(
                "[rate] chunk %d/%d committed (turn_ratings version %s)",
                number,
                len(chunks),
                report.output_versions.get("turn_ratings"),
            )
        if tables.exists(spark, target):
            ratings = tables.read(spark, target)
            distribution = stage.rating_distribution(silver, ratings, configured_judges(run.config))
            report.output_versions["rating_distribution"] = tables.overwrite(
                spark, run.table("rating_distribution"), distribution, run.commit("rate"), RATING_DISTRIBUTION
            )


def _write_work(run: PipelineRun, report, work: DataFrame) -> list[tuple[DataFrame, tuple[str, str]]]:
    """Write the run's work list partitioned by chunk (one file a chunk); return, per chunk that has
    rows, its rows (read by its partition, pinned to the version written) and its smallest and
    largest sample_id."""
    ref = run.table("rate_pending")
    version = tables.overwrite(
        run.spark, ref, work.repartition("chunk"), run.commit("rate"), RATE_PENDING, partition_by=("chunk",)
    )
    report.output_versions["rate_pending"] = version
    written = tables.read(run.spark, ref, version)
    ranges = written.groupBy("chunk").agg(F.min("sample_id").alias("lo"), F.max("sample_id").alias("hi"))
    return [
        (written.filter(F.col("chunk") == row["chunk"]), (row["lo"], row["hi"]))
        for row in ranges.orderBy("chunk").collect()  # one row per chunk
    ]


def _rate_chunk(run: PipelineRun, report, rated, id_range: tuple[str, str]) -> None:
    # the judges run once, then counts and merge read their answers (a scratch table on serverless:
    # a second call to an endpoint could answer otherwise)
    with run.scratch() as scratch, reused(rated, scratch) as rated:
        kind = (
            F.when(F.col("score").isNotNull(), "scored")
            .when(F.col("error").startswith(REQUEST_FAILED), "request_failed")
            .when(F.col("error") == NO_VLM_JUDGE, "no_vlm_judge")
            .when(F.col("error") == NO_IMAGE, "no_image")
            .when(F.col("error").startswith("unparsable"), "unparsable")
            .otherwise("rejected")
        )
        for row in rated.groupBy(kind.alias("kind")).agg(F.count("*").alias("n")).collect():
            if row["kind"] == "scored":
                report.rows_out += row["n"]
            else:
                report.counters[f"null.{row['kind']}"] = report.counters.get(f"null.{row['kind']}", 0) + row["n"]
        report.output_versions["turn_ratings"] = tables.merge_insert(
            run.spark,
            run.table("turn_ratings"),
            rated,
            stage.RATING_KEYS,
            run.commit("rate"),
            TURN_RATINGS,
            RATING_CONSTRAINTS,
            replace_when=REPLACE_FAILED,
            # the chunk's own range of sample_id: the MERGE skips the files other chunks wrote
            target_filter=f"t.sample_id BETWEEN {tables.sql_string(id_range[0])} AND {tables.sql_string(id_range[1])}",
        )


def distribution_summary(spark: SparkSession, config: PipelineConfig) -> str:
    """The score distribution of the last rate run (all subsets) next to FineVision's."""
    ref = tables.TableRef.of(config, "rating_distribution")
    if not tables.exists(spark, ref):
        return "rating_distribution: not written yet (run finevision rate)"
    rows = [r.asDict() for r in tables.read(spark, ref).filter("subset = '*'").collect()]
    return "% of scored turns per score, all subsets:\n" + stage.distribution_comparison(rows)
