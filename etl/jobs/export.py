"""`finevision export`: silver minus removed samples, flagged and rated -> gold_samples (Delta),
then the release folder (parquet per subset + dataset card) from the gold version just written."""

from __future__ import annotations

import logging

from pyspark.sql import functions as F

from etl import release, tables
from etl.runs import PipelineRun
from etl.schema import GOLD_SAMPLES
from etl.specs import configured_judges
from etl.stages.export import gold_samples, removal_reasons
from etl.stages.rate import current_ratings

log = logging.getLogger("finevision")


def release_dir(run: PipelineRun) -> str:
    if run.config.export.release_dir:
        return run.config.export.release_dir
    ref = run.table("release")
    if ref.path is None:
        raise ValueError("export.release_dir must be set when tables live in a catalog")
    return ref.path


def run(run: PipelineRun) -> None:
    spark, settings = run.spark, run.config.export
    with run.stage("export") as report:
        silver = run.read_input(report, "silver_samples")
        hits = run.read_input(report, "contamination_hits")
        clusters = run.read_input(report, "near_duplicate_clusters")
        removed = run.read_optional_input(report, "removed_samples")
        ratings = run.read_optional_input(report, "turn_ratings")
        if ratings is not None:  # only the configured judge and prompt of each axis count
            ratings = current_ratings(ratings, configured_judges(run.config))
        with run.reused(gold_samples(silver, hits, clusters, removed, ratings), "export_gold") as gold:
            report.rows_in = silver.count()
            report.rows_out = gold.count()
            reasons = removal_reasons(silver, removed).groupBy("reason").agg(F.count("*").alias("n")).collect()
            report.dropped = {r["reason"]: r["n"] for r in reasons}
            if report.rows_in != report.rows_out + sum(report.dropped.values()):
                raise RuntimeError(
                    f"export: {report.rows_in} silver rows but {report.rows_out} gold + {report.dropped} removed"
                )
            report.counters = {"rated_samples": gold.filter(F.col("relevance_min").isNotNull()).count()}
            ref = run.table("gold_samples")
            tables.ensure_table(spark, ref, GOLD_SAMPLES)  # pinned versions outlive upkeep for retention_days
            tables.set_properties(spark, ref, tables.retention_properties(settings.retention_days))
            version = tables.overwrite(spark, ref, gold, run.commit("export"), GOLD_SAMPLES)
            report.output_versions["gold_samples"] = version

        pinned = tables.read(spark, ref, version)
        folder = release_dir(run)
        shards = release.write_shards(pinned, folder, settings.shard_rows, report.rows_out)
        stats = release.subset_statistics(pinned)
        provenance = {
            "curation run": run.run_id,
            "mlflow run": run.mlflow_run_id or "-",
            "config hash": run.config_hash,
            "git revision": run.git_revision,
            **{f"input {name}": f"version {v}" for name, v in report.input_versions.items()},
        }
        card = release.dataset_card(settings.name, shards, stats, str(ref), version, provenance)
        path = release.write_card(folder, card)
        report.counters["release_shards"] = len(shards)
        report.counters["contaminated_samples"] = sum(s["contaminated_samples"] for s in stats)
        log.info(
            "[export] gold_samples version %d; release of %d shards in %s (card %s)", version, len(shards), folder, path
        )
