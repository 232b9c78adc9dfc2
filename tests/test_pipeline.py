"""Ingest and clean through real Spark and real Delta tables, on dirty input."""

from __future__ import annotations

import json

from pyspark.sql import functions as F

from etl import tables
from etl.build_info import build_info
from etl.jobs import clean, ingest
from etl.runs import PipelineRun


def count(spark, config, name, where=None):
    frame = tables.read(spark, tables.TableRef.of(config, name))
    return (frame.filter(where) if where else frame).count()


def test_ingest_and_clean_conserve_every_record_and_are_idempotent(spark, make_config, dirty_corpus, tmp_path):
    config = make_config(dirty_corpus["sources"], dirty_corpus["data"], **{"clean__max_pixels": 100_000_000})
    run = PipelineRun(spark, config, "test")
    ingest.run(run)
    clean.run(run)
    run.close()
    ingest_report, clean_report = run.reports

    # ingest: 7 + 3 + 2 records in; the missing image and the broken JSON line are quarantined
    assert ingest_report.rows_in == 12
    assert ingest_report.dropped == {"missing_image": 1, "invalid_json": 1}
    assert count(spark, config, "bronze_samples") == 8
    assert count(spark, config, "benchmark_items") == 2
    items = {r["item_id"]: r["benchmark"] for r in tables.read(spark, run.table("benchmark_items")).collect()}
    assert items == {"q1": "toy_bench", "q2": "toy_bench"}

    # clean: rows in = silver + quarantined by clean
    bronze, silver = count(spark, config, "bronze_samples"), count(spark, config, "silver_samples")
    quarantined = count(spark, config, "quarantine", "stage = 'clean'")
    assert clean_report.rows_in == bronze == silver + quarantined
    reasons = {
        r["reason"]: r["count"] for r in tables.read(spark, run.table("quarantine")).groupBy("reason").count().collect()
    }
    assert reasons == {
        "missing_image": 1,
        "invalid_json": 1,
        "corrupt_image": 1,
        "decompression_bomb": 1,
        "no_turns_left": 1,
    }
    assert clean_report.counters == {"turns_dropped_empty": 1, "turns_dropped_too_long": 1, "images_resized": 1}

    silver_rows = tables.read(spark, run.table("silver_samples"))
    sizes = silver_rows.select(F.explode("images").alias("i")).select("i.width", "i.height").collect()
    assert max(max(w, h) for w, h in sizes) == 2048 and (2048, 819) in [tuple(s) for s in sizes]
    seven = silver_rows.filter(F.col("source_ref.row") == 6).first()
    assert [t["user"] for t in seven["texts"]] == ["Colour?"]

    # idempotency: a second run changes no table's rows
    before = {n: count(spark, config, n) for n in ("bronze_samples", "silver_samples", "quarantine", "benchmark_items")}
    again = PipelineRun(spark, config, "test-again")
    ingest.run(again)
    clean.run(again)
    again.close()
    after = {n: count(spark, config, n) for n in before}
    assert after == before
    ids = tables.read(spark, run.table("bronze_samples")).groupBy("sample_id").count()
    assert ids.filter("count > 1").count() == 0
    assert again.reports[1].rows_in == 0  # nothing left to clean

    # lineage: commits carry run metadata; pipeline_runs has each stage of both runs
    history = spark.sql(f"DESCRIBE HISTORY {run.table('silver_samples').sql}").collect()
    metadata = [json.loads(h["userMetadata"]) for h in history if h["userMetadata"]]
    assert {m["run_id"] for m in metadata} >= {run.run_id}
    assert all(m["config_hash"] == config.config_hash() for m in metadata)
    runs = tables.read(spark, run.table("pipeline_runs")).filter(F.col("run_id") == run.run_id).collect()
    by_stage = {r["stage"]: r for r in runs}
    assert by_stage["clean"]["input_versions"]["bronze_samples"] == ingest_report.output_versions["bronze_samples"]
    assert by_stage["ingest"]["rows_in"] == 12 and by_stage["clean"]["status"] == "succeeded"
    # which code ran: the commit and version of the build (here the checkout's), on rows and commits
    build = build_info()
    assert build.commit != "unknown" and build.version != "unknown"
    assert {(r["git_revision"], r["package_version"]) for r in runs} == {(build.commit, build.version)}
    assert {m["git"] for m in metadata if m["run_id"] == run.run_id} == {build.commit}


def test_tables_are_readable_by_independent_delta_readers(spark, make_config, dirty_corpus):
    config = make_config(dirty_corpus["sources"], dirty_corpus["data"], **{"mlflow__enabled": "false"})
    run = PipelineRun(spark, config, "test")
    ingest.run(run)
    from deltalake import DeltaTable

    bronze = DeltaTable(run.table("bronze_samples").path)
    frame = bronze.to_pyarrow_table()
    assert frame.num_rows == 8
    assert set(frame.column("subset").to_pylist()) == {"photos", "maths"}
    assert bronze.history()[0]["userMetadata"] and run.run_id in bronze.history()[0]["userMetadata"]


def test_mlflow_run_records_stage_counts(spark, make_config, dirty_corpus, tmp_path):
    config = make_config(dirty_corpus["sources"], dirty_corpus["data"])
    run = PipelineRun(spark, config, "test")
    ingest.run(run)
    run.close()
    import mlflow

    mlflow.set_tracking_uri(config.mlflow.tracking_uri)
    recorded = mlflow.get_run(run.mlflow_run_id)  # the pipeline run; each stage is a run nested under it
    stage = mlflow.get_run(run.reports[0].mlflow_run_id)
    assert stage.data.tags["mlflow.parentRunId"] == run.mlflow_run_id and stage.info.run_name == "ingest"
    assert stage.data.metrics["ingest.rows_in"] == 12
    assert stage.data.metrics["ingest.dropped.missing_image"] == 1
    assert stage.data.params["ingest.output.bronze_samples"] == str(run.reports[0].output_versions["bronze_samples"])
    assert recorded.data.tags["finevision.run_id"] == stage.data.tags["finevision.run_id"] == run.run_id
    assert recorded.data.tags["mlflow.source.git.commit"] == build_info().commit
    assert recorded.data.tags["finevision.version"] == build_info().version
