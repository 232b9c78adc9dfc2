"""`finevision ingest`: sources -> bronze_samples, benchmark_items, quarantine."""

from __future__ import annotations

import logging
from collections import Counter

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import LongType, StructField, StructType

from etl import tables
from etl.config import ConfigError, PipelineConfig, SourceSpec
from etl.reuse import reused
from etl.runs import PipelineRun
from etl.schema import BENCHMARK_ITEMS, SAMPLES
from etl.sources import plan_shards, splittable
from etl.stages import ingest
from etl.stages.quarantine import counts_by_reason, rejected_rows

log = logging.getLogger("finevision")


def plan_tasks(config: PipelineConfig, specs: list[SourceSpec]) -> list[dict]:
    """One task per shard of every source; fails with a one-line error on a missing location."""
    tasks = []
    data_root = config.resolve("").rstrip("/")
    for spec in specs:
        location = config.resolve(spec.location)
        try:
            shards = plan_shards(spec, location)
        except FileNotFoundError as exc:
            raise ConfigError(f"source {spec.name}: {exc}") from None
        if not shards:
            raise ConfigError(f"source {spec.name}: no {spec.format} file at {location}")
        image_root = config.resolve(spec.image_root) if spec.image_root else None
        log.info("[ingest] %s: %d shard(s) of %s from %s", spec.name, len(shards), spec.format, location)
        for shard in shards:
            tasks.append(
                {
                    "spec": spec.model_dump_json(),
                    "path": shard.path,
                    "part": shard.part,
                    "start": shard.start,
                    "end": shard.end,
                    "first_row": shard.first_row,
                    "image_root": image_root,
                    "data_root": data_root,
                }
            )
    return tasks


def task_frame(spark, tasks: list[dict]) -> DataFrame:
    """The tasks as a frame of one task per partition, so each shard is one Spark task.

    `spark.range` with one partition per id gives that placement exactly; the tasks join it as the
    broadcast side, which keeps the range's partitioning (and works under Spark Connect, unlike
    `sparkContext.parallelize`)."""
    rows = [(index, *(task[f] for f in ingest.TASKS.fieldNames())) for index, task in enumerate(tasks)]
    schema = StructType([StructField("task_index", LongType(), False), *ingest.TASKS.fields])
    indexed = spark.createDataFrame(rows, schema)
    slots = spark.range(0, len(tasks), 1, len(tasks)).withColumnRenamed("id", "task_index")
    return slots.join(F.broadcast(indexed), "task_index").select(*ingest.TASKS.fieldNames())


def shard_tasks(spark, tasks: list[dict], config: PipelineConfig) -> list[dict]:
    """The tasks with every big JSON or JSONL file split into byte ranges (`ingest.shard_bytes`).

    The split reads each such file once on an executor; the driver receives only the ranges, a few
    per `shard_bytes` of input."""
    is_candidate = [splittable(SourceSpec.model_validate_json(t["spec"])) and t["part"] is None for t in tasks]
    candidates = [t for t, yes in zip(tasks, is_candidate, strict=False) if yes]
    if not candidates:
        return tasks
    split = [row.asDict() for row in ingest.split_tasks(task_frame(spark, candidates), config.ingest).collect()]
    ranges = Counter(t["path"] for t in split)
    for path, n in sorted(ranges.items()):
        if n > 1:
            log.info("[ingest] %s: %d byte ranges of about %d bytes", path, n, config.ingest.shard_bytes)
    kept = [t for t, yes in zip(tasks, is_candidate, strict=False) if not yes]
    return kept + sorted(split, key=lambda t: (t["path"], t["start"]))


def run(run: PipelineRun, specs: list[SourceSpec] | None = None) -> None:
    spark, config = run.spark, run.config
    specs = specs if specs is not None else config.source_specs()
    with run.stage("ingest") as report:
        tasks = plan_tasks(config, specs)
        if not tasks:
            raise ConfigError("ingest: no source files found; check sources_dir and data_root")
        tasks = shard_tasks(spark, tasks, config)
        report.counters["shards"] = len(tasks)
        parsed = ingest.parse_shards(task_frame(spark, tasks), config.ingest)
        # Parsing the files is the stage's work: once, then counts, writes and quarantine read it.
        with run.scratch() as scratch, reused(parsed, scratch) as parsed:
            report.count_outcomes(counts_by_reason(parsed))
            report.counters.update({r["name"]: r["n"] for r in ingest.adapter_counters(parsed).collect()})
            commit = run.commit("ingest")
            write = {
                "bronze_samples": (ingest.accepted_samples(parsed), SAMPLES),
                "benchmark_items": (ingest.accepted_benchmark_items(parsed), BENCHMARK_ITEMS),
            }
            for name, (rows, schema) in write.items():
                report.output_versions[name] = tables.merge_insert(
                    spark, run.table(name), rows, ["sample_id"], commit, schema
                )
            run.write_quarantine(report, rejected_rows(parsed), commit)
