"""The embedded sample corpus through ingest, clean, embed, decontaminate and dedup, checked
against the corpus manifest's ground truth (written by the builder, not by the stages)."""

from __future__ import annotations

import pytest
from pyspark.sql import functions as F

from etl import tables
from etl.jobs import STAGES
from tests.conftest import SAMPLE_CORPUS_SOURCES as SOURCES

# corpus_run (tests/conftest.py): the sample corpus through every stage once per session.


def test_every_subset_lands_where_the_manifest_says(spark, corpus_run):
    run, manifest = corpus_run
    expected = manifest["expected"]["default_config"]
    silver = {
        r["subset"]: r["count"]
        for r in tables.read(spark, run.table("silver_samples")).groupBy("subset").count().collect()
    }
    quarantine = tables.read(spark, run.table("quarantine")).groupBy("subset", "stage", "reason").count().collect()
    for subset in [s for s in SOURCES if s in expected]:
        assert silver.get(subset, 0) == expected[subset]["silver"], subset
        got = {(r["stage"], r["reason"]): r["count"] for r in quarantine if r["subset"] == subset}
        want = {("ingest", k): v for k, v in expected[subset]["ingest_quarantine"].items()}
        want |= {("clean", k): v for k, v in expected[subset]["clean_quarantine"].items()}
        assert got == want, subset


def test_decontamination_finds_the_injected_copies_and_nothing_unrelated(spark, corpus_run):
    """The default method (`threshold`, FineVision's rule) finds every copy a 0.95 threshold must
    find and flags no other image: the corpus' easy-VQA shapes and same-template charts are the
    look-alikes a lower threshold would flag. (The verified method, opt-in, is checked on planted
    copies of its own in tests/test_decontam_invariants.py and test_decontam_methods.py.)"""
    run, manifest = corpus_run
    assert run.config.decontaminate.method == "threshold"
    hits = tables.read(spark, run.table("contamination_hits")).filter(F.col("image_id").isNotNull()).collect()
    found = {(h["image_id"], h["benchmark"], h["benchmark_item_id"]) for h in hits}
    injected = {
        (c["training"]["image_sha256"], c["benchmark"], c["item_id"]): c["must_find"] for c in manifest["contamination"]
    }
    must_find = {key for key, required in injected.items() if required}
    assert must_find and must_find <= found
    assert found <= set(injected), f"unrelated images flagged: {found - set(injected)}"
    assert all(h["similarity"] >= h["threshold"] for h in hits)
    rates = {r["subset"]: r for r in tables.read(spark, run.table("contamination_rates")).collect()}
    assert rates["charts"]["contaminated_samples"] == len({k for k in found if k[1] == "chartqa_local"})


def test_near_duplicates_across_subsets_share_a_cluster(spark, corpus_run):
    run, manifest = corpus_run
    cluster_of = {
        r["image_id"]: r["cluster_id"] for r in tables.read(spark, run.table("near_duplicate_clusters")).collect()
    }
    pairs = [(p["a"]["image_sha256"], p["b"]["image_sha256"]) for p in manifest["near_duplicates"] if p["must_find"]]
    assert pairs
    for a, b in pairs:
        assert a in cluster_of and cluster_of[a] == cluster_of.get(b), (a, b)
    sizes = (
        tables.read(spark, run.table("near_duplicate_clusters"))
        .groupBy("cluster_id")
        .agg(
            F.count("*").alias("n"),
            F.sum(F.col("representative").cast("int")).alias("reps"),
            F.first("cluster_size").alias("size"),
        )
        .collect()
    )
    assert all(r["reps"] == 1 and r["n"] == r["size"] for r in sizes)


def test_pipeline_runs_record_every_stage_with_pinned_inputs(spark, corpus_run):
    run, _ = corpus_run
    rows = {
        r["stage"]: r
        for r in tables.read(spark, run.table("pipeline_runs")).filter(F.col("run_id") == run.run_id).collect()
    }
    assert list(rows) and set(rows) == {s.name for s in STAGES}
    assert all(r["status"] == "succeeded" for r in rows.values())
    assert rows["embed"]["input_versions"]["silver_samples"] == rows["clean"]["output_versions"]["silver_samples"]


def test_gui_subsets_reach_silver_with_their_action_distribution(spark, corpus_run):
    run, manifest = corpus_run
    stats = tables.read(spark, run.table("action_stats")).collect()
    by_subset = {}
    for row in stats:
        by_subset.setdefault(row["subset"], {})[row["action"]] = row["count"]
    assert set(by_subset) == {"gui_desktop", "gui_mobile"}
    assert by_subset["gui_desktop"].get("click", 0) > 0 and by_subset["gui_mobile"].get("click", 0) > 0
    for subset in by_subset:
        assert sum(r["share"] for r in stats if r["subset"] == subset) == pytest.approx(1.0, abs=1e-3)
    quarantined = tables.read(spark, run.table("quarantine")).filter("reason = 'unsupported_action'").collect()
    assert [r["subset"] for r in quarantined] == ["gui_desktop"]  # policy quarantine; gui_mobile keeps
    ingest_report = next(r for r in run.reports if r.stage == "ingest")
    assert ingest_report.counters.get("gui_mobile.unsupported_action") == 1  # the dropped step, counted
