"""Dedup stage: connected components on a known graph, near-duplicate pairs against numpy brute
force, clusters, exact duplicates and keep-one removals on hand-made frames."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pyspark.sql.types import ArrayType, FloatType, StringType, StructField, StructType

from etl.schema import SAMPLES
from etl.stages import dedup
from etl.stages.components import connected_components
from udfs.buckets import nearest_buckets, pairs_across, pairs_within_bucket

DIM = 512
TAU = 0.95
EMBEDDINGS = StructType(
    [StructField("image_id", StringType(), nullable=False), StructField("embedding", ArrayType(FloatType()))]
)


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def at_cosine(rng: np.random.Generator, original: np.ndarray, cosine: float) -> np.ndarray:
    """A unit vector at exactly `cosine` from the unit vector `original` (up to rounding)."""
    noise = rng.standard_normal(original.shape)
    noise -= noise @ original * original
    noise /= np.linalg.norm(noise)
    return unit((cosine * original + np.sqrt(1 - cosine**2) * noise)[None])[0]


def around_topics(rng: np.random.Generator, topics: np.ndarray, n: int) -> np.ndarray:
    """Unit vectors around random topic centroids (cosine ~0.5 within a topic), as embeddings
    of real photographs are: structure is what lets k-means buckets keep copies together."""
    noise = rng.standard_normal((n, DIM)) / np.sqrt(DIM)
    return unit(topics[rng.integers(0, len(topics), n)] + noise)


@pytest.fixture(scope="module")
def planted():
    """(ids, vectors, planted pairs): 400 unrelated unit vectors and 30 originals from 12
    topics, 1-3 near-copies of each original (cosine 0.985-0.995 to it, so ~0.97-0.99 between
    copies), and 5 decoys at cosine 0.93 to an original (below tau: not planted)."""
    rng = np.random.default_rng(11)
    topics = unit(rng.standard_normal((12, DIM)))
    vectors, groups = list(around_topics(rng, topics, 400)), []
    for original in around_topics(rng, topics, 30):
        copies = [at_cosine(rng, original, rng.uniform(0.985, 0.995)) for _ in range(rng.integers(1, 4))]
        groups.append(range(len(vectors), len(vectors) + 1 + len(copies)))
        vectors += [original, *copies]
    vectors += [at_cosine(rng, vectors[group[0]], 0.93) for group in groups[:5]]
    ids = np.array([f"img{i:04d}" for i in rng.permutation(len(vectors))], dtype=object)
    pairs = {tuple(sorted((ids[i], ids[j]))) for group in groups for i in group for j in group if i < j}
    return ids, np.stack(vectors), pairs


def brute_force_pairs(ids: np.ndarray, x: np.ndarray, tau: float) -> set[tuple[str, str]]:
    sims = x.astype(np.float64) @ x.astype(np.float64).T
    assert not (np.abs(sims - tau) < 1e-4).any(), "data too close to tau to compare float32 with float64"
    rows, cols = np.nonzero(np.triu(sims >= tau, k=1))
    return {tuple(sorted((ids[r], ids[c]))) for r, c in zip(rows, cols, strict=False)}


def embeddings_frame(spark, ids, x):
    return spark.createDataFrame(pd.DataFrame({"image_id": ids, "embedding": list(x.astype(np.float32))}), EMBEDDINGS)


@pytest.fixture(scope="module")
def planted_frame(spark, planted):
    return embeddings_frame(spark, *planted[:2]).cache()


def rows(frame, columns: list[str]) -> list[tuple]:
    """The frame's rows as sorted tuples, after checking its columns (pyspark.testing's
    assertDataFrameEqual needs pyspark.pandas, which does not import under pandas 3)."""
    assert frame.columns == columns
    return sorted(tuple(r) for r in frame.collect())


def pair_list(pairs) -> list[tuple[str, str]]:
    rows = pairs.collect()
    assert all(r.image_id_a < r.image_id_b and r.similarity >= TAU for r in rows)
    return [(r.image_id_a, r.image_id_b) for r in rows]


# ---------------------------------------------------------------------------------------------
# numpy parts


def test_pairs_within_bucket_blockwise_matches_brute_force(planted):
    ids, x, _ = planted
    one_bucket = np.zeros((len(ids), 1), np.int32)
    a, b, s = pairs_within_bucket(ids, x, one_bucket, 0, TAU, block_elements=3 * len(ids))
    assert set(zip(a.tolist(), b.tolist(), strict=False)) == brute_force_pairs(ids, x, TAU)
    assert len(a) == len(set(zip(a, b, strict=False))) and (a < b).all() and (s >= np.float32(TAU)).all()


def test_pair_is_reported_only_in_the_smallest_shared_bucket():
    ids = np.array(["b", "a"], dtype=object)
    x = np.eye(2, DIM, dtype=np.float32)[[0, 0]]
    buckets = np.array([[5, 3], [3, 5]], np.int32)
    assert pairs_within_bucket(ids, x, buckets, 5, TAU)[0].tolist() == []
    a, b, s = pairs_within_bucket(ids, x, buckets, 3, TAU)
    assert (a.tolist(), b.tolist(), s.tolist()) == (["a"], ["b"], [1.0])


def test_nearest_buckets_are_ordered_by_similarity():
    centroids = np.eye(3, 4, dtype=np.float32)
    vectors = unit(np.array([[0.1, 0.9, 0.4, 0.0], [0.8, 0.0, 0.5, 0.3]]))
    assert nearest_buckets(vectors, centroids, 2).tolist() == [[1, 2], [0, 2]]
    assert nearest_buckets(vectors, centroids, 5).tolist() == [[1, 2, 0], [0, 2, 1]]


# ---------------------------------------------------------------------------------------------
# near_duplicate_pairs


def test_exact_all_pairs_finds_exactly_the_planted_pairs(planted, planted_frame):
    ids, x, expected = planted
    assert brute_force_pairs(ids, x, TAU) == expected and len(expected) > 40
    found = pair_list(dedup.near_duplicate_pairs(planted_frame, TAU, n_buckets=1))
    assert len(found) == len(set(found)) and set(found) == expected


def test_bucketed_pairs_find_the_planted_pairs_once(planted, planted_frame):
    ids, x, expected = planted
    bucketed = dedup.bucketed_embeddings(planted_frame, n_buckets=8, probes=2, seed=3, max_train_vectors=300).cache()
    sizes = [r.vectors for r in dedup.bucket_sizes(bucketed).collect()]
    assert len(sizes) == 8 and sum(sizes) == 2 * len(ids) and max(sizes) < len(ids) / 2
    found = pair_list(dedup.pairs_in_buckets(bucketed, TAU))
    assert len(found) == len(set(found)) and set(found) == expected


def test_threshold_is_inclusive_and_bad_embeddings_are_skipped(spark):
    just_below = np.nextafter(np.float32(0.96), np.float32(0))
    x = np.zeros((4, DIM), np.float32)
    x[0, 0], x[1, :2], x[2, 2] = 1.0, (0.96, 0.28), 1.0  # sim(u, v) = float32(0.96) exactly
    x[3, [0, 3]] = just_below, np.sqrt(1 - np.float64(just_below) ** 2)  # sim(u, y): one float32 step below
    ids = np.array(["u", "v", "w", "y"], dtype=object)
    frame = embeddings_frame(spark, ids, x).unionByName(
        spark.createDataFrame([("nan", [float("nan")] * DIM), ("null", None)], EMBEDDINGS)
    )
    found = dedup.near_duplicate_pairs(frame, 0.96, n_buckets=4)  # too few vectors for 4 buckets: exact
    assert rows(found, dedup.PAIRS.fieldNames()) == [("u", "v", float(np.float32(0.96)))]


def test_pairs_across_two_parts_complete_the_pairs_within_each(planted):
    ids, x, _ = planted
    one_bucket = np.zeros((len(ids), 1), np.int32)
    half = len(ids) // 2
    within = [
        pairs_within_bucket(ids[part], x[part], one_bucket[part], 0, TAU)
        for part in (slice(None, half), slice(half, None))
    ]
    a, b, s = pairs_across(
        ids[:half],
        x[:half],
        one_bucket[:half],
        ids[half:],
        x[half:],
        one_bucket[half:],
        0,
        TAU,
        block_elements=3 * len(ids),
    )
    assert (a < b).all() and (s >= np.float32(TAU)).all()
    found = [pair for part in within for pair in zip(part[0].tolist(), part[1].tolist(), strict=False)] + list(
        zip(a, b, strict=False)
    )
    assert len(found) == len(set(found)) and set(found) == brute_force_pairs(ids, x, TAU)


def test_split_buckets_find_the_planted_pairs_once(planted, planted_frame):
    """Buckets of ~100 vectors cut into groups of at most 30: the same pairs as whole buckets."""
    _, _, expected = planted
    bucketed = dedup.bucketed_embeddings(planted_frame, n_buckets=8, probes=2, seed=3, max_train_vectors=300).cache()
    groups = dedup.comparison_groups(bucketed, max_group_vectors=30).groupBy(*dedup.GROUP_KEYS).count()
    largest_group = groups.agg({"count": "max"}).first()[0]
    assert largest_group <= 30 < min(r.vectors for r in dedup.bucket_sizes(bucketed).collect())
    found = pair_list(dedup.pairs_in_buckets(bucketed, TAU, max_group_vectors=30))
    assert len(found) == len(set(found)) and set(found) == expected


def test_a_skewed_bucket_is_split_and_its_duplicates_all_found(spark):
    """70 near-identical blank images (every pair a near-duplicate) and 30 unrelated ones, all in one
    bucket: no group passes the bound, and all 70 * 69 / 2 blank pairs are found once."""
    rng = np.random.default_rng(5)
    blank = unit(rng.standard_normal((1, DIM)))[0]
    x = np.stack([at_cosine(rng, blank, 0.995) for _ in range(70)] + list(unit(rng.standard_normal((30, DIM)))))
    ids = np.array([f"img{i:03d}" for i in rng.permutation(len(x))], dtype=object)
    expected = brute_force_pairs(ids, x, TAU)
    assert len(expected) >= 70 * 69 // 2
    bucketed = dedup.bucketed_embeddings(embeddings_frame(spark, ids, x), n_buckets=1)
    sizes = dedup.comparison_groups(bucketed, max_group_vectors=16).groupBy(*dedup.GROUP_KEYS).count().collect()
    assert max(r["count"] for r in sizes) <= 16 and len(sizes) == 13 * 14 // 2  # 13 parts of 8 at most, each pair
    frame = embeddings_frame(spark, ids, x)
    found = pair_list(dedup.near_duplicate_pairs(frame, TAU, n_buckets=1, max_group_vectors=16))
    assert len(found) == len(set(found)) and set(found) == expected


# ---------------------------------------------------------------------------------------------
# connected components and clusters


def test_connected_components_on_a_known_graph(spark):
    chain = ["c05", "c03", "c08", "c01", "c10", "c00", "c07", "c02", "c11", "c04", "c09", "c06"]
    edges = list(zip(chain, chain[1:], strict=False))
    edges += [("p2", "p1"), ("p1", "p2"), ("p1", "p2")]  # isolated pair, repeated both ways
    edges += [("t3", "t1"), ("t1", "t2"), ("t2", "t3")]  # triangle
    edges += [("s9", "s9"), ("z1", "a9")]  # self loop; pair whose smallest id is the dst
    frame = spark.createDataFrame(edges, "src string, dst string")
    expected = {
        **{c: "c00" for c in chain},
        "p1": "p1",
        "p2": "p1",
        "t1": "t1",
        "t2": "t1",
        "t3": "t1",
        "s9": "s9",
        "z1": "a9",
        "a9": "a9",
    }
    assert rows(connected_components(frame), ["node", "component"]) == sorted(expected.items())
    with pytest.raises(RuntimeError, match="did not converge in 1 iterations"):
        connected_components(frame, max_iterations=1)


def test_near_duplicate_clusters_and_representatives(spark):
    pairs = spark.createDataFrame(
        [("b", "c", 0.97), ("a", "c", 0.99), ("d", "e", 0.96), ("x", "y", 0.98), ("w", "y", 0.95)],
        dedup.PAIRS,
    )
    expected = [
        ("a", "a", 3, True),
        ("b", "a", 3, False),
        ("c", "a", 3, False),
        ("d", "d", 2, True),
        ("e", "d", 2, False),
        ("w", "w", 3, True),
        ("x", "w", 3, False),
        ("y", "w", 3, False),
    ]
    assert rows(dedup.near_duplicate_clusters(pairs), dedup.CLUSTER_COLUMNS) == expected


# ---------------------------------------------------------------------------------------------
# exact duplicates and keep-one


@pytest.fixture(scope="module")
def silver(spark):
    def sample(sample_id, subset, *image_ids):
        images = [(None, f"{i}.png", i, 8, 8) for i in image_ids] if image_ids else None
        return (sample_id, subset, "General VQA", subset, images, [("q", "a")], ("f", None, 0))

    rows = [
        sample("s1", "A", "x1"),
        sample("s2", "B", "x1", "y1"),  # exact duplicate of s1's image; kept for cluster y1
        sample("s3", "A", "y2"),  # near duplicate of s2's y1
        sample("s4", "A", "z", "w1", "w2"),  # a cluster held by one sample only: nothing removed
        sample("s5", "A"),  # text-only
        sample("s6", "C", "x1", "x1"),  # the same image twice in one sample
        sample("s7", "C", "x1", "y3"),  # removed by both groups, listed once
    ]
    return spark.createDataFrame(rows, SAMPLES)


def test_exact_duplicate_images(silver):
    assert rows(dedup.exact_duplicate_images(silver), ["image_id", "sample_count"]) == [("x1", 4)]


def test_keep_one_removals(spark, silver):
    clusters = spark.createDataFrame(
        [
            ("y1", "y1", 3, True),
            ("y2", "y1", 3, False),
            ("y3", "y1", 3, False),
            ("w1", "w1", 2, True),
            ("w2", "w1", 2, False),
        ],
        "image_id string, cluster_id string, cluster_size long, representative boolean",
    )
    exact = "image x1 in 4 samples: kept sample s1"
    expected = [
        ("s2", "B", "exact_duplicate", exact),
        ("s3", "A", "near_duplicate", "near-duplicate cluster y1 (3 images): kept sample s2"),
        ("s6", "C", "exact_duplicate", exact),
        ("s7", "C", "exact_duplicate", exact),
    ]
    assert rows(dedup.keep_one_removals(silver, clusters), dedup.REMOVAL_COLUMNS) == expected


def test_the_group_bound_leaves_an_evenly_spread_bucket_uncut():
    """A cut bucket's rows travel once per part: the default bound must sit above the size a bucket
    reaches without skew (TARGET_BUCKET_SIZE vectors, each in `probes` buckets), with room for the
    spread of k-means bucket sizes, and the configuration must default to it."""
    from etl.config import PipelineConfig
    from udfs.buckets import TARGET_BUCKET_SIZE

    settings = PipelineConfig().dedup
    assert settings.max_group_vectors == dedup.MAX_GROUP_VECTORS
    assert dedup.MAX_GROUP_VECTORS >= 2 * settings.probes * TARGET_BUCKET_SIZE
