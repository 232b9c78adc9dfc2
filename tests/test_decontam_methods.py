"""The two decontamination methods end to end through Spark and Delta: `threshold` gives exactly the
pairs a brute-force cosine over the stored embeddings gives; `verified` keeps its planted copy (above
the threshold, so decided by it without verification) and nothing else. Verified hits below the
threshold and their evidence: tests/test_decontam_invariants.py."""

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


def test_threshold_is_brute_force_and_verified_keeps_its_hits(spark, make_config, contaminated_lakehouse):
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
    # the resized JPEG copy scores above 0.95: a hit of FineVision's rule, kept unverified
    assert [(h["subset"], h["benchmark_item_id"]) for h in verified] == [("train", "b2")]
    assert verified[0]["similarity"] >= np.float32(0.95) and verified[0]["threshold"] == pytest.approx(0.95)
    assert verified[0]["decided_by"] == "threshold" and verified[0]["evidence"] is None
    assert verified[0]["rule"].startswith("sscd-verified|") and "|rule " in verified[0]["rule"]
    # the text side does not depend on the image method
    text = tables.read(spark, run.table("contamination_hits")).filter("method = 'text-ngram'").collect()
    assert [(h["subset"], h["benchmark_item_id"]) for h in text] == [("chat", "b3")]
