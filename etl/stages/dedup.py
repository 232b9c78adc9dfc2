"""Near-duplicates and exact duplicates inside the training corpus, as pure Spark transforms.

`finevision dedup` chains them (the job layer reads `image_embeddings` and `silver_samples` and
writes `near_duplicate_clusters` and, under policy keep-one, removal rows):

    pairs    = near_duplicate_pairs(embeddings, tau_dup)          # image_id_a, image_id_b, similarity
    clusters = near_duplicate_clusters(pairs)                     # image_id, cluster_id, cluster_size, representative
    removed  = keep_one_removals(silver_samples, clusters)        # sample_id, subset, reason, detail

The numpy work inside a bucket (k-means centroids, nearest buckets, blockwise comparison) is in
`udfs/buckets.py`; connected components, in `etl/stages/components.py`.

Near-duplicate pairs come from a distributed approximate self-join by bucketing (an IVF index
spread over the cluster): k-means centroids are trained on a bounded sample on the driver, each
vector goes to the buckets of its `probes` nearest centroids, and each bucket is compared with
itself exactly, by blocks of matrix products. Nothing that scales with the corpus reaches the
driver: only the training sample (at most `max_train_vectors` rows) and per-iteration counts of
connected components.

Recall trade-off: a pair is found iff its two vectors share at least one of their `probes`
buckets. On embeddings with structure (photographs cluster by content) near-copies almost
always have the same nearest centroid; the pairs that can be missed lie across a boundary
between buckets, and `probes = 2` catches most of them. On structureless data (isotropic random
vectors, every centroid about equally far) bucketing does lose pairs: with 500 such vectors, 8
buckets and probes = 2, one planted pair at cosine 0.97 out of 109 shared no bucket. Measure
recall on a sample against `n_buckets = 1` before trusting a setting. More probes raise recall
and cost: every vector is shuffled `probes` times and a bucket's work is quadratic in its size,
so total work is about probes^2 n^2 / n_buckets. `n_buckets = 1` is the exact all-pairs join
(quadratic; for small corpora and as the reference to measure recall against, as
`udfs.knn.hit_recall` does for FAISS indexes). k-means buckets are uneven on real data (a
thousand blank screenshots make one big bucket): a bucket of more than `max_group_vectors` is cut
into parts compared pairwise, so no Python worker holds more than that many vectors (about 2 KiB
each) at once (`bucket_sizes` shows the buckets). The output is quadratic in the size of a
clique: thousands of near-identical images (blank frames, logos) give millions of pairs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    FloatType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
)

from etl.schema import image_occurrences, require_columns
from etl.stages.components import connected_components
from udfs.buckets import (
    MAX_BUCKETS,
    MIN_TRAIN_PER_BUCKET,
    default_n_buckets,
    nearest_buckets,
    pairs_across,
    pairs_within_bucket,
    train_bucket_centroids,
)
from udfs.knn import vectors_from_arrow

PAIRS = StructType(
    [
        StructField("image_id_a", StringType(), nullable=False),
        StructField("image_id_b", StringType(), nullable=False),
        StructField("similarity", FloatType(), nullable=False),
    ]
)
GROUP_KEYS = ["bucket", "part_p", "part_q"]
CLUSTER_COLUMNS = ["image_id", "cluster_id", "cluster_size", "representative"]
REMOVAL_COLUMNS = ["sample_id", "subset", "reason", "detail"]
NEAR_DUPLICATE = "near_duplicate"
EXACT_DUPLICATE = "exact_duplicate"

TRAIN_VECTORS = 20_000  # k-means training sample when max_train_vectors is not given
# Vectors one Python worker compares at once (dedup.max_group_vectors; 50,000 x 512 float32 = 100 MB).
# A cut bucket's rows travel once per part, so the bound sits well above a bucket's expected size
# (TARGET_BUCKET_SIZE x 2 probes = 20,000) and only a skewed bucket is cut: at 20,000, half of
# the buckets of an evenly spread 200k corpus were cut and dedup's shuffle grew 7x for 4x the data.
MAX_GROUP_VECTORS = 50_000

_BUCKETED = StructType(
    [
        StructField("bucket", IntegerType(), nullable=False),
        StructField("image_id", StringType(), nullable=False),
        StructField("embedding", ArrayType(FloatType())),
        StructField("buckets", ArrayType(IntegerType())),
    ]
)


def _valid_embeddings(embeddings: DataFrame) -> DataFrame:
    """Rows with an embedding free of NaN (failed embeddings are null or NaN)."""
    return embeddings.select("image_id", "embedding").filter(
        F.col("image_id").isNotNull()
        & F.col("embedding").isNotNull()
        & (F.size("embedding") > 0)
        & ~F.exists("embedding", lambda v: F.isnan(v) | v.isNull())
    )


def training_sample(embeddings: DataFrame, n: int, max_vectors: int, seed: int = 0) -> np.ndarray:
    """At most `max_vectors` random embeddings of a frame of `n` rows, as [k, dim] float32 on
    the driver (gathered as Arrow: a Python row of 512 floats weighs about 14 KB, its array 2 KB)."""
    fraction = min(1.0, 1.2 * max_vectors / max(n, 1))
    sampled = embeddings.sample(withReplacement=False, fraction=fraction, seed=seed).limit(max_vectors)
    return vectors_from_arrow(sampled.select("embedding").toArrow())


def assign_buckets(embeddings: DataFrame, centroids: np.ndarray, probes: int) -> DataFrame:
    """(bucket, image_id, embedding, buckets): each row once for each of its `probes` nearest
    centroids; `buckets` lists all of them. The centroids (bounded: `max_buckets` vectors) travel
    in the UDF's closure, serialised once per stage, which works over Spark Connect too (no
    broadcast variable)."""
    shipped = np.ascontiguousarray(centroids, dtype=np.float32)

    def assign(frames: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        c = shipped
        for frame in frames:
            if frame.empty:
                continue
            x = np.stack(frame["embedding"].to_numpy()).astype(np.float32, copy=False)
            top = nearest_buckets(x, c, probes)
            yield pd.DataFrame(
                {
                    "bucket": top.ravel(),
                    "image_id": np.repeat(frame["image_id"].to_numpy(), top.shape[1]),
                    "embedding": np.repeat(frame["embedding"].to_numpy(), top.shape[1]),
                    "buckets": list(np.repeat(top, top.shape[1], axis=0)),
                }
            )

    return embeddings.select("image_id", "embedding").mapInPandas(assign, _BUCKETED)


def _single_bucket(embeddings: DataFrame) -> DataFrame:
    return embeddings.select(F.lit(0).alias("bucket"), "image_id", "embedding", F.array(F.lit(0)).alias("buckets"))


def bucket_sizes(bucketed: DataFrame) -> DataFrame:
    """(bucket, vectors) of a bucketed frame, largest first: to check the buckets fit."""
    return bucketed.groupBy("bucket").agg(F.count(F.lit(1)).alias("vectors")).orderBy(F.desc("vectors"))


def bucketed_embeddings(
    embeddings: DataFrame,
    n_buckets: int | None = None,
    probes: int = 2,
    seed: int = 0,
    max_train_vectors: int | None = None,
    max_buckets: int = MAX_BUCKETS,
) -> DataFrame:
    """(bucket, image_id, embedding, buckets) for the valid embeddings: see
    `near_duplicate_pairs`. One bucket (no sampling, no k-means) when `n_buckets` is 1 or the
    input has too few vectors for more."""
    require_columns(embeddings, ["image_id", "embedding"], "near_duplicate_pairs")
    if n_buckets is not None and n_buckets < 1:
        raise ValueError(f"n_buckets must be >= 1, got {n_buckets}")
    if probes < 1:
        raise ValueError(f"probes must be >= 1, got {probes}")
    if max_buckets < 1:
        raise ValueError(f"max_buckets must be >= 1, got {max_buckets}")
    max_train_vectors = max_train_vectors or max(TRAIN_VECTORS, MIN_TRAIN_PER_BUCKET * max_buckets)
    valid = _valid_embeddings(embeddings)
    if n_buckets == 1:
        return _single_bucket(valid)
    n = valid.count()
    n_buckets = n_buckets or default_n_buckets(n, max_train_vectors, max_buckets)
    if n_buckets == 1 or n < 2 * n_buckets:
        return _single_bucket(valid)
    sample = training_sample(valid, n, max_train_vectors, seed)
    n_buckets = min(n_buckets, len(sample))
    if n_buckets <= 1:
        return _single_bucket(valid)
    centroids = train_bucket_centroids(sample, n_buckets, seed)
    return assign_buckets(valid, centroids, probes)


def near_duplicate_pairs(
    embeddings: DataFrame,
    threshold: float,
    n_buckets: int | None = None,
    probes: int = 2,
    seed: int = 0,
    max_train_vectors: int | None = None,
    max_buckets: int = MAX_BUCKETS,
    max_group_vectors: int = MAX_GROUP_VECTORS,
) -> DataFrame:
    """(image_id_a, image_id_b, similarity) for every pair of images found with inner product
    >= threshold (inclusive), image_id_a < image_id_b, each pair once.

    `embeddings`: (image_id, embedding) with one row per image_id and L2-normalised float
    embeddings (cosine = inner product); rows with a null or NaN embedding are skipped.
    Approximate (see the module docstring for recall): `n_buckets` k-means buckets (default:
    about `TARGET_BUCKET_SIZE` vectors each, at most `max_buckets`), trained on at most
    `max_train_vectors` sampled vectors (default: 20,000, or 39 a bucket if more), each vector
    searched in its `probes` nearest buckets. `n_buckets = 1`, or an input of fewer than
    2 n_buckets vectors, compares all pairs exactly. A bucket of more than `max_group_vectors`
    vectors is split (see `pairs_in_buckets`), so no Python worker holds more than that at once.
    The input is read up to three times (count, sample, join): cache it if it is expensive.
    `similarity` is float32, as computed.
    """
    _check_threshold(threshold)
    bucketed = bucketed_embeddings(embeddings, n_buckets, probes, seed, max_train_vectors, max_buckets)
    return pairs_in_buckets(bucketed, threshold, max_group_vectors)


def _check_threshold(threshold: float) -> None:
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"threshold is a cosine similarity in [-1, 1], got {threshold}")


def pairs_in_buckets(bucketed: DataFrame, threshold: float, max_group_vectors: int = MAX_GROUP_VECTORS) -> DataFrame:
    """(image_id_a, image_id_b, similarity) >= threshold within each bucket of a
    `bucketed_embeddings` frame, each pair once (in the smallest bucket its images share).

    A bucket is compared in `applyInPandas` groups of at most `max_group_vectors` vectors: a bucket
    larger than that (skew: a thousand blank screenshots land in one bucket) is cut, in image_id
    order, into parts of at most half of it, and each pair of parts (p, q), p <= q, is one group
    comparing part p with part q, so every pair of the bucket is compared in exactly one group.
    The cut ranks rows inside the JVM (a window per bucket, spilling if need be), not in Python;
    the groups of a cut bucket run one after another in the task that holds the bucket.
    """
    require_columns(bucketed, _BUCKETED.fieldNames(), "pairs_in_buckets")
    _check_threshold(threshold)
    groups = comparison_groups(bucketed, max_group_vectors)

    def group_pairs(frame: pd.DataFrame) -> pd.DataFrame:
        ids = frame["image_id"].to_numpy(dtype=object)
        vectors, buckets = np.stack(frame["embedding"].to_numpy()), np.stack(frame["buckets"].to_numpy())
        bucket_no, part_p, part_q = (int(frame[name].iloc[0]) for name in ("bucket", "part_p", "part_q"))
        if part_p == part_q:
            a, b, s = pairs_within_bucket(ids, vectors, buckets, bucket_no, threshold)
        else:
            p = frame["part"].to_numpy() == part_p
            a, b, s = pairs_across(
                ids[p], vectors[p], buckets[p], ids[~p], vectors[~p], buckets[~p], bucket_no, threshold
            )
        return pd.DataFrame({"image_id_a": a, "image_id_b": b, "similarity": s})

    return groups.groupBy(*GROUP_KEYS).applyInPandas(group_pairs, PAIRS)


def comparison_groups(bucketed: DataFrame, max_group_vectors: int = MAX_GROUP_VECTORS) -> DataFrame:
    """The rows of `bucketed` keyed by the group that compares them (GROUP_KEYS: bucket, part_p,
    part_q), plus their own `part`: see `pairs_in_buckets`. A row of a cut bucket is in as many
    groups as its bucket has parts."""
    if max_group_vectors < 2:
        raise ValueError(f"max_group_vectors must be >= 2, got {max_group_vectors}")
    part_size = max_group_vectors // 2
    bucket = Window.partitionBy("bucket")
    size = F.count(F.lit(1)).over(bucket)
    rank = F.row_number().over(bucket.orderBy("image_id")) - 1
    whole = size <= max_group_vectors  # a bucket that fits stays one group, as it always was
    cut = bucketed.select(
        *_BUCKETED.fieldNames(),
        F.when(whole, 0).otherwise(F.floor(rank / part_size)).cast("int").alias("part"),
        F.when(whole, 1).otherwise(F.ceil(size / part_size)).cast("int").alias("parts"),
    )
    other = F.explode(F.sequence(F.lit(0), F.col("parts") - 1)).alias("other")
    return cut.select("*", other).select(
        *_BUCKETED.fieldNames(),
        "part",
        F.least("part", "other").alias("part_p"),
        F.greatest("part", "other").alias("part_q"),
    )


def near_duplicate_clusters(pairs: DataFrame, cut: Callable[[DataFrame], DataFrame] | None = None) -> DataFrame:
    """(image_id, cluster_id, cluster_size, representative) for every image in some pair.

    cluster_id = the smallest image_id of its connected component of pairs; representative is
    true for exactly that image of each cluster. `cut`: how connected components materialises
    its rounds where checkpoints are refused (see `connected_components`).
    """
    require_columns(pairs, ["image_id_a", "image_id_b"], "near_duplicate_clusters")
    edges = pairs.select(F.col("image_id_a").alias("src"), F.col("image_id_b").alias("dst"))
    components = connected_components(edges, cut=cut).select(
        F.col("node").alias("image_id"), F.col("component").alias("cluster_id")
    )
    sizes = components.groupBy("cluster_id").agg(F.count(F.lit(1)).cast(LongType()).alias("cluster_size"))
    return components.join(sizes, "cluster_id").select(
        "image_id", "cluster_id", "cluster_size", (F.col("image_id") == F.col("cluster_id")).alias("representative")
    )


def sample_images(samples: DataFrame) -> DataFrame:
    """(sample_id, subset, image_id), one row per distinct image of each sample."""
    require_columns(samples, ["sample_id", "subset", "images"], "dedup")
    return image_occurrences(samples, "sample_id", "subset").filter(F.col("image_id").isNotNull()).distinct()


def exact_duplicate_images(samples: DataFrame) -> DataFrame:
    """(image_id, sample_count) for images held by more than one sample (byte-identical images,
    since image_id is the sha256 of the bytes)."""
    return _shared_images(sample_images(samples))


def _shared_images(held: DataFrame) -> DataFrame:
    return (
        held.groupBy("image_id")
        .agg(F.count(F.lit(1)).cast(LongType()).alias("sample_count"))
        .filter(F.col("sample_count") > 1)
    )


def _duplicate_groups(samples: DataFrame, clusters: DataFrame) -> DataFrame:
    """(group, sample_id, subset, priority, reason, group_detail): each sample holding an image
    of a near-duplicate cluster or an exactly duplicated image, once per such group."""
    held = sample_images(samples)
    near = held.join(clusters.select("image_id", "cluster_id", "cluster_size"), "image_id").select(
        F.concat(F.lit("near:"), "cluster_id").alias("group"),
        "sample_id",
        "subset",
        F.lit(2).alias("priority"),
        F.lit(NEAR_DUPLICATE).alias("reason"),
        F.concat(
            F.lit("near-duplicate cluster "),
            "cluster_id",
            F.lit(" ("),
            F.col("cluster_size").cast("string"),
            F.lit(" images)"),
        ).alias("group_detail"),
    )
    exact = held.join(_shared_images(held), "image_id").select(
        F.concat(F.lit("exact:"), "image_id").alias("group"),
        "sample_id",
        "subset",
        F.lit(1).alias("priority"),
        F.lit(EXACT_DUPLICATE).alias("reason"),
        F.concat(
            F.lit("image "), "image_id", F.lit(" in "), F.col("sample_count").cast("string"), F.lit(" samples")
        ).alias("group_detail"),
    )
    return near.unionByName(exact).distinct()


def keep_one_removals(samples: DataFrame, clusters: DataFrame) -> DataFrame:
    """(sample_id, subset, reason, detail): the samples policy keep-one removes.

    Each near-duplicate cluster, and each image_id held by several samples (a cluster of one
    image), keeps the sample with the smallest sample_id among those holding any of its images
    and removes the others, with reason `near_duplicate` or `exact_duplicate` and a detail
    naming the group and the kept sample. A sample removed by several groups appears once, with
    the exact-duplicate reason first, then the smallest detail. A sample holding images of
    several groups is kept only if it is the smallest in all of them (so, with multi-image
    samples, a group whose kept sample is removed by another group loses all its samples).
    """
    require_columns(clusters, ["image_id", "cluster_id", "cluster_size"], "keep_one_removals")
    groups = _duplicate_groups(samples, clusters)
    kept = groups.groupBy("group").agg(F.min("sample_id").alias("kept_sample"))
    removed = groups.join(kept, "group").filter(F.col("sample_id") != F.col("kept_sample"))
    detail = F.concat("group_detail", F.lit(": kept sample "), "kept_sample")
    first = F.min(F.struct(F.col("priority"), detail.alias("detail"), F.col("reason"), F.col("subset")))
    return (
        removed.groupBy("sample_id")
        .agg(first.alias("why"))
        .select("sample_id", "why.subset", "why.reason", "why.detail")
    )
