"""`finevision analyze`: analytics tables over the curated corpus.

- `action_stats`: the GUI action distribution per subset;
- `subset_stats`: FineVision's per-subset table, per subset, per category and in total;
- `diversity_metrics`: effective rank, participation ratio and diversity of the SSCD embeddings.

silver_samples is required; image_embeddings, contamination_hits, near_duplicate_clusters and
turn_ratings are read when they exist (pinned, recorded) and otherwise leave their figures null. Of
turn_ratings only the configured judge and prompt of each axis count, as in the export.
"""

from __future__ import annotations

from pyspark.sql import functions as F

from etl import tables
from etl.jobs.decontaminate import current_rules
from etl.reuse import reused
from etl.runs import PipelineRun
from etl.schema import ACTION_STATS, DIVERSITY_METRICS, SUBSET_STATS
from etl.specs import configured_judges, embedder_spec, rules_from, ship_to_executors
from etl.stages.corpus_stats import slim_samples, subset_stats
from etl.stages.decontaminate import current_hits
from etl.stages.diversity import diversity_metrics, grouped_embeddings
from etl.stages.gui_stats import action_distribution
from etl.stages.rate import current_ratings
from udfs.sscd import model_id

OPTIONAL_INPUTS = ("image_embeddings", "contamination_hits", "near_duplicate_clusters", "turn_ratings")


def run(run: PipelineRun) -> None:
    spark = run.spark
    with run.stage("analyze") as report:
        # every figure scans silver's slim columns: cached on classic, recomputed (a pinned read) on serverless
        with reused(slim_samples(run.read_input(report, "silver_samples"))) as silver:
            extra = {name: run.read_optional_input(report, name) for name in OPTIONAL_INPUTS}
            if extra["contamination_hits"] is not None:  # only the configured method, thresholds and rule count
                extra["contamination_hits"] = current_hits(
                    extra["contamination_hits"], current_rules(run.config).values()
                )
            if extra["turn_ratings"] is not None:  # only the configured judge and prompt of each axis count
                extra["turn_ratings"] = current_ratings(extra["turn_ratings"], configured_judges(run.config))
            commit = run.commit("analyze")

            # Each table is computed once, by its write; the counters read the version written.
            report.output_versions["action_stats"] = version = tables.overwrite(
                spark, run.table("action_stats"), action_distribution(silver), commit, ACTION_STATS
            )
            actions = tables.read(spark, run.table("action_stats"), version)
            gui = actions.agg(F.count("*").alias("n"), F.countDistinct("subset").alias("subsets")).first()

            stats = subset_stats(
                silver,
                ship_to_executors(spark, rules_from(run.config).tokenizer_json),  # nodes without the driver's disk
                hits=extra["contamination_hits"],
                clusters=extra["near_duplicate_clusters"],
                ratings=extra["turn_ratings"],
            )
            report.output_versions["subset_stats"] = version = tables.overwrite(
                spark, run.table("subset_stats"), stats, commit, SUBSET_STATS
            )
            total = tables.read(spark, run.table("subset_stats"), version).filter("level = 'total'").first()

            counters = {
                "gui_subsets": gui["subsets"] if gui else 0,
                "action_rows": gui["n"] if gui else 0,
                "turns": total["turns"] if total else 0,
            }
            if extra["image_embeddings"] is not None:
                model = model_id(embedder_spec(run.config))
                embeddings = extra["image_embeddings"].filter(F.col("model_id") == model)
                metrics = diversity_metrics(spark, grouped_embeddings(silver, embeddings), model)
                report.output_versions["diversity_metrics"] = tables.overwrite(
                    spark, run.table("diversity_metrics"), metrics, commit, DIVERSITY_METRICS
                )
                counters["diversity_groups"] = metrics.count()
            report.rows_in = report.rows_out = total["samples"] if total else 0
            report.counters = counters
