"""The two decontamination methods end to end through Spark and Delta: `threshold` gives exactly the
pairs a brute-force cosine over the stored embeddings gives; `verified` finds the planted copy with
its evidence, and nothing else."""

from __future__ import annotations

import numpy as np
import pytest
from pyspark.sql import functions as F

from etl import tables
from etl.jobs import decontaminate
from etl.runs import PipelineRun


def brute_force_pairs(spark, run, threshold: float) -> set[tuple[str, str]]:
    """(sample_id, benchmark_item_id) whose images' stored embeddings have cosine >= threshold."""
    vectors = {
        r["image_id"]: np.array(r["embedding"], np.float32)
        for r in tables.read(spark, run.table("image_embeddings")).collect()
    }
    silver = tables.read(spark, run.table("silver_samples")).select(
        "sample_id", F.explode("images.image_id").alias("i")
    )
    items = tables.read(spark, run.table("benchmark_items")).select("item_id", F.explode("images.image_id").alias("i"))
    train, bench = silver.collect(), items.collect()
    return {
        (t["sample_id"], b["item_id"])
        for t in train
        for b in bench
        if float(vectors[t["i"]] @ vectors[b["i"]]) >= np.float32(threshold)
    }


def test_threshold_is_brute_force_and_verified_adds_evidence(spark, make_config, contaminated_lakehouse):
    # the lakehouse holds tests/test_decontaminate.py's corpus after ingest, clean and embed (tests/conftest.py)
    config = make_config(
        contaminated_lakehouse["sources"],
        contaminated_lakehouse["data"],
        **{"mlflow__enabled": "false", "decontaminate__method": "threshold"},
    )
    run = PipelineRun(spark, config, "methods")
    decontaminate.run(run)
    hits = tables.read(spark, run.table("contamination_hits"))
    threshold_hits = hits.filter("method = 'sscd-faiss-exact'").collect()
    assert {(h["sample_id"], h["benchmark_item_id"]) for h in threshold_hits} == brute_force_pairs(spark, run, 0.95)
    assert threshold_hits and all(h["evidence"] is None for h in threshold_hits)

    verified_config = config.model_copy(
        update={"decontaminate": config.decontaminate.model_copy(update={"method": "verified"})}
    )
    decontaminate.run(PipelineRun(spark, verified_config, "verified"))
    verified = tables.read(spark, run.table("contamination_hits")).filter("method = 'sscd-verified'").collect()
    assert [(h["subset"], h["benchmark_item_id"]) for h in verified] == [("train", "b2")]
    evidence = verified[0]["evidence"]
    assert evidence["score"] >= evidence["decision"] == pytest.approx(verified[0]["threshold"])
    assert evidence["sscd_whole"] == pytest.approx(verified[0]["similarity"], abs=1e-3)
    assert evidence["inliers"] > 0 and evidence["aligned_ncc"] > 0.5
    assert evidence["tiles_agree"] > 0.9 and evidence["tiles_changed"] == 0 and evidence["aligned_coverage"] > 0.9
    # the text side does not depend on the image method
    text = tables.read(spark, run.table("contamination_hits")).filter("method = 'text-ngram'").collect()
    assert [(h["subset"], h["benchmark_item_id"]) for h in text] == [("chat", "b3")]
