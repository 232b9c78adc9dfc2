"""`finevision export`: silver minus removed samples, flagged and rated -> gold_samples (Delta),
then the release folder (FineVision's layout: parquet per subset, a shuffled `default` config, side
files of the project's columns, dataset card) from the gold version just written, without the
contaminated samples and all but one sample of each duplicate cluster unless configured to keep them."""

from __future__ import annotations

import logging

from pyspark.sql import functions as F

from etl import release, release_card, tables
from etl.jobs.decontaminate import current_rules
from etl.reuse import reused
from etl.runs import PipelineRun
from etl.schema import GOLD_SAMPLES
from etl.specs import configured_judges
from etl.stages.decontaminate import current_hits
from etl.stages.export import gold_samples, release_exclusions, removal_reasons, source_sample_ids
from etl.stages.gui_steps import gui_step_samples
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
        # only the hits of the configured method, thresholds and rule flag a sample
        hits = current_hits(run.read_input(report, "contamination_hits"), current_rules(run.config).values())
        clusters = run.read_input(report, "near_duplicate_clusters")
        removed = run.read_optional_input(report, "removed_samples")
        ratings = run.read_optional_input(report, "turn_ratings")
        if ratings is not None:  # only the configured judge and prompt of each axis count
            ratings = current_ratings(ratings, configured_judges(run.config))
        # joins of pinned table versions: recomputed on serverless, same rows
        with reused(gold_samples(silver, hits, clusters, removed, ratings, settings.turns)) as gold:
            report.rows_in = silver.count()
            report.rows_out = gold.count()
            reasons = removal_reasons(silver, removed).groupBy("reason").agg(F.count("*").alias("n")).collect()
            report.dropped = {r["reason"]: r["n"] for r in reasons}
            # merged and split rows hold turns of other silver samples: count the samples gold holds
            held = report.rows_out if settings.turns == "keep" else source_sample_ids(gold).count()
            if report.rows_in != held + sum(report.dropped.values()):
                raise RuntimeError(
                    f"export: {report.rows_in} silver rows but {held} in gold + {report.dropped} removed"
                )
            report.counters = {"rated_samples": gold.filter(F.col("relevance_min").isNotNull()).count()}
            if settings.turns != "keep":
                report.counters["gold_source_samples"] = held
                report.counters["gold_rows_reshaped"] = gold.filter(F.col("turn_sources").isNotNull()).count()
            written = gui_step_samples(gold) if settings.gui_per_step else gold
            if settings.gui_per_step:
                report.counters["gold_rows_with_gui_steps"] = written.count()
            ref = run.table("gold_samples")
            version = tables.overwrite(spark, ref, written, run.commit("export"), GOLD_SAMPLES)
            report.output_versions["gold_samples"] = version

        pinned = tables.read(spark, ref, version)
        folder = release_dir(run)
        shards, stats, folders = write_release(run, pinned, folder)
        provenance = {
            "curation run": run.run_id,
            "mlflow run": run.mlflow_run_id or "-",
            "config hash": run.config_hash,
            "git revision": run.git_revision,
            "gold table": f"{ref} version {version}",
            **{f"input {name}": f"version {v}" for name, v in report.input_versions.items()},
        }
        card = release_card.CardInputs(
            settings.name,
            shards,
            stats,
            folders,
            sources_of(run),
            settings.keep_contaminated,
            settings.keep_duplicates,
            provenance,
            settings.turns,
        )
        path = release.write_card(folder, release_card.dataset_card(card))
        report.counters["release_shards"] = len(shards)
        report.counters["release_samples"] = sum(s["samples"] for s in stats)
        report.counters["release_left_out_contaminated"] = sum(s["left_out_contaminated"] for s in stats)
        report.counters["release_left_out_duplicate"] = sum(s["left_out_duplicate"] for s in stats)
        log.info(
            "[export] gold_samples version %d; release of %d shards in %s (card %s)", version, len(shards), folder, path
        )


def write_release(run: PipelineRun, gold, folder: str):
    """The release's shards and side files, its per-subset statistics and its config -> folder names."""
    settings = run.config.export
    rows = release_exclusions(gold, settings.keep_contaminated, settings.keep_duplicates)
    with reused(rows) as rows:  # gold pinned to the version written: recomputed on serverless, same rows
        stats = release_card.subset_statistics(rows)
        folders = release.folder_names(s["subset"] for s in stats)
        if settings.shuffled_default and release.DEFAULT_CONFIG in folders:
            raise ValueError(
                "a subset is named `default`, the shuffled config's name: rename it or set export.shuffled_default=false"
            )
        kept = rows.filter(F.col("excluded").isNull())
        frame = release.release_frame(kept, folders, settings.shuffled_default, settings.shuffle_seed)
        shards = release.write_shards(frame, folder, settings.shard_bytes)
    return shards, stats, folders


def sources_of(run: PipelineRun) -> dict[str, list[dict]]:
    """subset -> the license, homepage and citation of each source spec feeding it."""
    found: dict[str, list[dict]] = {}
    for spec in run.config.source_specs():
        if spec.benchmark is None:
            found.setdefault(spec.subset, []).append(
                {"name": spec.name, "license": spec.license, "homepage": spec.homepage, "citation": spec.citation}
            )
    return found
