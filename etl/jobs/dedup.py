"""`finevision dedup`: exact duplicates by image_id and near-duplicate clusters by SSCD kNN
-> near_duplicate_clusters, and removed_samples under policy `keep-one`."""

from __future__ import annotations

from pyspark.sql import functions as F

from etl import tables
from etl.reuse import reused
from etl.runs import PipelineRun
from etl.schema import NEAR_DUPLICATE_CLUSTERS
from etl.session import is_serverless
from etl.specs import embedder_spec
from etl.stages.dedup import exact_duplicate_images, keep_one_removals, near_duplicate_clusters, near_duplicate_pairs
from etl.stages.embed import held_embeddings
from udfs.sscd import model_id


def run(run: PipelineRun) -> None:
    spark, settings = run.spark, run.config.dedup
    model = model_id(embedder_spec(run.config))
    with run.stage("dedup") as report:
        silver = run.read_input(report, "silver_samples")
        embeddings = run.read_input(report, "image_embeddings").filter(F.col("model_id") == model)
        training = held_embeddings(embeddings, silver)
        pairs = near_duplicate_pairs(
            training,
            settings.threshold,
            n_buckets=settings.buckets,
            probes=settings.probes,
            max_buckets=settings.max_buckets,
            max_group_vectors=settings.max_group_vectors,
        )
        # Scratch tables on serverless: each round of connected components (no checkpoints there;
        # recomputing would redo every earlier round), then the clusters (the kNN join runs once).
        with run.scratch() as scratch:
            cut = scratch.keep if is_serverless(spark) else None
            with reused(near_duplicate_clusters(pairs, cut), scratch) as clusters:
                summary = clusters.agg(
                    F.countDistinct("cluster_id").alias("clusters"), F.count("*").alias("images")
                ).first()
                report.rows_in = silver.count()
                report.rows_out = report.rows_in
                report.counters = {
                    "near_duplicate_clusters": summary["clusters"] if summary else 0,
                    "images_in_clusters": summary["images"] if summary else 0,
                    "exact_duplicate_images": exact_duplicate_images(silver).count(),
                }
                commit = run.commit("dedup")
                report.output_versions["near_duplicate_clusters"] = tables.overwrite(
                    spark, run.table("near_duplicate_clusters"), clusters, commit, NEAR_DUPLICATE_CLUSTERS
                )
                if settings.policy != "keep-one":
                    run.write_removals(report, None, commit)  # annotate removes nothing
                else:
                    removed = keep_one_removals(silver, clusters).select(
                        "sample_id",
                        "subset",
                        F.lit("dedup").alias("stage"),
                        "reason",
                        "detail",
                        F.lit(run.run_id).alias("run_id"),
                    )
                    # a join of pinned silver with the clusters: recomputed on serverless, same rows
                    with reused(removed) as removed:
                        report.dropped = {
                            r["reason"]: r["n"]
                            for r in removed.groupBy("reason").agg(F.count("*").alias("n")).collect()
                        }
                        report.rows_out = report.rows_in - sum(report.dropped.values())
                        run.write_removals(report, removed, commit)
