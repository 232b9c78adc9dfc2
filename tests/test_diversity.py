"""Diversity definitions against FineVision's published numbers, and the distributed covariance."""

from __future__ import annotations

import math

import numpy as np
import pytest

from etl.reference import DIVERSITY as PUBLISHED
from etl.stages.diversity import (
    covariance,
    diversity_metrics,
    diversity_score,
    effective_rank,
    participation_ratio,
)


@pytest.mark.parametrize("dataset", sorted(PUBLISHED))
def test_diversity_score_reproduces_the_published_numbers(dataset):
    er, pr, published = PUBLISHED[dataset]
    assert diversity_score(er, pr, 512) == pytest.approx(published, abs=6e-4)


def test_effective_rank_and_participation_ratio_of_known_spectra():
    flat = np.ones(512)
    assert effective_rank(flat) == pytest.approx(512) and participation_ratio(flat) == pytest.approx(512)
    k = np.r_[np.full(37, 2.5), np.zeros(475)]  # k equal directions: both measures count them
    assert effective_rank(k) == pytest.approx(37) and participation_ratio(k) == pytest.approx(37)
    two = np.r_[3.0, 1.0, np.zeros(510)]  # p = (3/4, 1/4)
    assert effective_rank(two) == pytest.approx(math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25))))
    assert participation_ratio(two) == pytest.approx(16 / 10)


def test_covariance_from_sums_matches_numpy():
    x = np.random.default_rng(0).normal(size=(50, 6)) + 3.0
    assert np.allclose(covariance(len(x), x.sum(0), x.T @ x), np.cov(x, rowvar=False))


def test_distributed_metrics_isotropic_and_low_rank_groups(spark):
    from pyspark.sql import functions as F

    rng = np.random.default_rng(1)
    basis = np.linalg.qr(rng.normal(size=(512, 8)))[0]
    low = (rng.normal(size=(300, 8)) @ basis.T + 0.5).astype(np.float32)  # an 8-dimensional affine subspace
    low_rows = spark.createDataFrame(
        [("subset", "low", f"l{i}", v.tolist()) for i, v in enumerate(low)],
        "level string, name string, image_id string, embedding array<float>",
    )
    iso = spark.range(3000, numPartitions=3).select(  # isotropic Gaussian, generated on the executors
        F.lit("subset").alias("level"),
        F.lit("iso").alias("name"),
        F.col("id").cast("string").alias("image_id"),
        F.array(*[F.randn(seed=d) for d in range(512)]).cast("array<float>").alias("embedding"),
    )
    got = {r["name"]: r for r in diversity_metrics(spark, iso.unionByName(low_rows).repartition(3), "m").collect()}

    assert got["iso"]["images"] == 3000 and got["iso"]["dimension"] == 512
    assert got["iso"]["effective_rank"] > 0.9 * 512  # isotropic: close to the dimension
    assert got["iso"]["diversity_score"] > 0.8
    expected = np.linalg.eigvalsh(np.cov(low.astype(np.float64), rowvar=False))  # computed independently
    assert got["low"]["effective_rank"] == pytest.approx(effective_rank(expected), rel=1e-6)
    assert got["low"]["participation_ratio"] == pytest.approx(participation_ratio(expected), rel=1e-6)
    assert 6 < got["low"]["effective_rank"] <= 8.01
