"""Benchmark decontamination, image side: hits through a FAISS index of benchmark embeddings
(the `threshold` method) or candidates verified pair by pair (`verified`); the text side is
`etl.stages.text_decontam`. Rates per subset and the removal policy.

The benchmark side is small and bounded (the 66 benchmark units), so its vectors (as Arrow) are
gathered on the driver into one FAISS index shipped to executors as bytes (in the UDF's closure,
or a file for multi-GB indexes) and deserialised once per Python worker. The training side is
never collected nor shuffled: every partition of training embeddings is searched in place.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import FloatType, LongType, StringType, StructField, StructType

from etl.schema import CONTAMINATION_HITS, EVIDENCE, image_occurrences, require_columns
from udfs.knn import Hits, cached_index, search_threshold_arrays, standout_scores, supports_range_search
from udfs.sscd import EmbedderSpec
from udfs.verify import BOTH, FEATURES, THRESHOLD, VERIFIED, VerifierRule, decide, verify_pairs

INDEX_HITS = StructType(
    [
        StructField("image_id", StringType()),
        StructField("index_row", LongType()),
        StructField("similarity", FloatType()),
    ]
)


def training_images(samples: DataFrame) -> DataFrame:
    """(sample_id, subset, image_id) for every image of every sample."""
    return image_occurrences(samples, "sample_id", "subset").distinct()


def benchmark_images(items: DataFrame) -> DataFrame:
    """(benchmark, benchmark_item_id, image_id) for every image of every benchmark item."""
    items = items.withColumnRenamed("item_id", "benchmark_item_id")
    return image_occurrences(items, "benchmark", "benchmark_item_id").distinct()


@dataclass(frozen=True)
class IndexSource:
    """How executors get the index: a loader called once per worker, keyed by its fingerprint."""

    fingerprint: str
    load: Callable[[], bytes]


@dataclass(frozen=True)
class Standout:
    """The verified method's filter from the embeddings alone (`udfs.knn.standout_scores`): below the
    threshold a candidate pair is kept only if its cosine minus `weight` x the mean of the training
    image's `neighbours` best cosines to benchmark images of other copy `groups` (one label per
    index row, `udfs.knn.copy_groups`) reaches `margin`."""

    groups: np.ndarray
    neighbours: int
    weight: float
    margin: float


def search_training_images(
    embeddings: DataFrame,
    index: IndexSource,
    threshold: float,
    k: int,
    candidate_threshold: float | None = None,
    top_k: int | None = None,
    standout: Standout | None = None,
) -> DataFrame:
    """(image_id, index_row, similarity) for every training embedding >= threshold to an indexed one,
    all of them (a kNN-only index is searched again with a larger k where k bounded a query:
    `search_complete`); with `candidate_threshold` (the verified method), also the pairs down to it,
    of which `top_k` per training image are kept (`candidate_mask`: the cut never drops a pair at or
    above `threshold`) and, with `standout`, only those that stand out from the training image's
    other benchmark neighbours (`udfs.knn.standout_scores`, +inf at or above the threshold, computed on every pair of the search down
    to the candidate floor, in the same task: nothing about the training side is gathered)."""
    require_columns(embeddings, ["image_id", "embedding"], "search_training_images")
    floor = threshold if candidate_threshold is None else min(candidate_threshold, threshold)

    def search(frames: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        faiss_index = cached_index(index.load, key=index.fingerprint)
        for frame in frames:
            if frame.empty:
                continue
            vectors = np.stack(frame["embedding"].to_numpy()).astype(np.float32)
            hits = search_complete(faiss_index, vectors, floor, k)
            keep = candidate_mask(hits.query_rows, hits.similarities, threshold, top_k)
            if standout is not None and candidate_threshold is not None:
                scores = standout_scores(
                    hits.query_rows,
                    hits.index_rows,
                    hits.similarities,
                    standout.groups,
                    threshold,
                    floor,
                    standout.neighbours,
                    standout.weight,
                )
                keep &= scores >= np.float32(standout.margin)  # +inf at or above the threshold
            image_ids = frame["image_id"].to_numpy(dtype=object)[hits.query_rows[keep]]
            # object dtype: pandas would infer an Arrow-backed string column that Spark 4.1's
            # Arrow serializer receives as a ChunkedArray and rejects.
            yield pd.DataFrame(
                {
                    "image_id": pd.Series(image_ids, dtype=object),
                    "index_row": hits.index_rows[keep].astype(np.int64),
                    "similarity": hits.similarities[keep].astype(np.float32),
                }
            )

    return embeddings.select("image_id", "embedding").mapInPandas(search, INDEX_HITS)


def search_complete(index, vectors: np.ndarray, tau: float, k: int) -> Hits:
    """`search_threshold_arrays` with no pair >= tau lost to the k bound: flat and IVF indexes return
    every pair >= tau of what they scan; a kNN-only index (HNSW) is searched again, k doubled, for
    the queries whose k neighbours are all >= tau, until none is or k covers the whole index (HNSW's
    beam stays approximate: `bench/decontam.py` measures its recall)."""
    hits = search_threshold_arrays(index, vectors, tau=tau, k=k)
    if supports_range_search(index):
        return hits
    while k < index.ntotal:
        full = np.flatnonzero(np.bincount(hits.query_rows, minlength=len(vectors)) >= k)
        if not len(full):
            break
        k = min(2 * k, index.ntotal)
        again = search_threshold_arrays(index, vectors[full], tau=tau, k=k)
        rest = ~np.isin(hits.query_rows, full)
        rows = np.concatenate([hits.query_rows[rest], full[again.query_rows]])
        ids = np.concatenate([hits.index_rows[rest], again.index_rows])
        sims = np.concatenate([hits.similarities[rest], again.similarities])
        order = np.lexsort((ids, rows))
        hits = Hits(rows[order], ids[order], sims[order])
    return hits


def candidate_mask(queries: np.ndarray, similarities: np.ndarray, threshold: float, k: int | None) -> np.ndarray:
    """Boolean mask: every pair at or above `threshold`, and, below it, each query's `k` most similar
    (all of them when k is None)."""
    above = similarities >= np.float32(threshold)
    if k is None:
        return np.ones(len(similarities), bool)
    below = np.flatnonzero(~above)
    keep = above.copy()
    keep[below[top_k_per_query(queries[below], similarities[below], k)]] = True
    return keep


def top_k_per_query(queries: np.ndarray, similarities: np.ndarray, k: int) -> np.ndarray:
    """Boolean mask keeping, for each query, its k most similar hits (ties: the earlier one)."""
    order = np.lexsort((-similarities, queries))
    rank = np.arange(len(order)) - np.searchsorted(queries[order], queries[order])
    keep = np.zeros(len(order), bool)
    keep[order[rank < k]] = True
    return keep


PAIR_KEYS = ["image_id", "sample_id", "subset", "bench_image_id", "benchmark", "benchmark_item_id"]
HIT_GROUP = ["image_id", "sample_id", "subset", "benchmark", "benchmark_item_id"]


def image_pairs(index_hits: DataFrame, index_rows: DataFrame, training: DataFrame, benchmark: DataFrame) -> DataFrame:
    """(image_id, sample_id, subset, bench_image_id, benchmark, benchmark_item_id, similarity): the
    search's hits spread over the samples and benchmark items holding each image, plus every
    training image whose `image_id` a benchmark image has (the same bytes: similarity 1, found even
    without an embedding or by an approximate index). index_rows maps `index_row` to the benchmark
    `bench_image_id`; training and benchmark are the occurrence frames."""
    bench = benchmark.withColumnRenamed("image_id", "bench_image_id")
    searched = index_hits.join(index_rows, "index_row").join(training, "image_id").join(bench, "bench_image_id")
    identical = training.join(F.broadcast(bench), F.col("image_id") == F.col("bench_image_id")).withColumn(
        "similarity", F.lit(1.0).cast("float")
    )
    return (
        searched.select(*PAIR_KEYS, "similarity")
        .unionByName(identical.select(*PAIR_KEYS, "similarity"))
        .groupBy(*PAIR_KEYS)
        .agg(F.max("similarity").alias("similarity"))
    )


def image_hits(pairs: DataFrame, model_id: str, threshold: float, method: str, rule_id: str, run_id: str) -> DataFrame:
    """contamination_hits rows of the `threshold` method: one per (training sample image, benchmark
    item) with a pair (from `image_pairs`) at or above threshold, without evidence."""
    above = pairs.filter(F.col("similarity") >= F.lit(threshold).cast("float"))
    best = above.groupBy(*HIT_GROUP).agg(F.max("similarity").alias("similarity"))
    return _hit_rows(best, model_id, threshold, method, F.lit(THRESHOLD), rule_id, run_id, F.lit(None).cast(EVIDENCE))


def _hit_rows(frame: DataFrame, model_id, threshold, method, decided_by, rule_id, run_id, evidence) -> DataFrame:
    return frame.select(
        "image_id",
        "sample_id",
        "subset",
        "benchmark",
        "benchmark_item_id",
        F.col("similarity").cast("float").alias("similarity"),
        F.lit(model_id).alias("model_id"),
        F.lit(threshold).cast("float").alias("threshold"),
        F.lit(method).alias("method"),
        F.lit(run_id).alias("run_id"),
        evidence.alias("evidence"),
        decided_by.alias("decided_by"),
        F.lit(rule_id).alias("rule"),
    ).select(*CONTAMINATION_HITS.fieldNames())


def _all_text(column: str):
    """Every question and answer of a sample or item as one text (cut at 20,000 characters)."""
    turns = F.transform(F.coalesce(F.col(column), F.array()), lambda t: F.concat_ws(" ", t["user"], t["assistant"]))
    return F.substring(F.concat_ws(" ", turns), 1, 20_000)


def verified_hits(
    pairs: DataFrame,
    samples: DataFrame,
    items: DataFrame,
    spec: EmbedderSpec,
    rule: VerifierRule,
    threshold: float,
    model_id: str,
    method: str,
    rule_id: str,
    run_id: str,
    broadcast_pairs: bool = True,
) -> DataFrame:
    """contamination_hits rows of the `verified` method from the candidate `pairs` (`image_pairs`):
    every pair at or above `threshold` is a hit unverified (`decided_by` threshold), a pair below it
    is a hit when the verifier accepts it (`verified`, with its evidence); `udfs.verify.decide` is
    the decision. One row per (training image, benchmark item): `both` when one benchmark image of
    the item is at the threshold and another one verified.

    With `broadcast_pairs` the candidates are broadcast to the samples to pick up the training
    images' bytes and texts where they lie (silver is streamed once, never shuffled); the caller
    turns it off when the pairs (about `candidate_k` a training image) outgrow a broadcast, and the
    two sides meet in a shuffle join. The benchmark images the pairs name are broadcast to them.
    The verifier runs per Arrow batch of pairs on the executors (`udfs.verify.verify_pairs`), on the pairs below the threshold only,
    measuring evidence from cheap to costly only as far as the decision needs (a feature it did not
    need is stored null in the evidence).
    """
    require_columns(samples, ["sample_id", "images", "texts"], "verified_hits")
    require_columns(items, ["benchmark", "item_id", "images", "texts"], "verified_hits")
    candidates = pairs.select(*PAIR_KEYS, "similarity")
    candidates = F.broadcast(candidates) if broadcast_pairs else candidates
    train_side = image_occurrences(
        samples.withColumn("train_text", _all_text("texts")), "sample_id", "train_text", fields=("image_id", "bytes")
    ).withColumnRenamed("bytes", "train_bytes")
    bench_side = image_occurrences(
        items.select(
            "benchmark", F.col("item_id").alias("benchmark_item_id"), "images", _all_text("texts").alias("bench_text")
        ),
        "benchmark",
        "benchmark_item_id",
        "bench_text",
        fields=("image_id", "bytes"),
    ).select(
        "benchmark",
        "benchmark_item_id",
        F.col("image_id").alias("bench_image_id"),
        F.col("bytes").alias("bench_bytes"),
        "bench_text",
    )
    # Only the benchmark images that are candidates travel, broadcast (the benchmark side is bounded);
    # the rows carrying training bytes are never shuffled. A pair repeated (an image twice in one
    # sample) is verified twice and collapsed by the final grouping, which carries no bytes.
    needed = pairs.select("benchmark", "benchmark_item_id", "bench_image_id").distinct()
    bench_needed = bench_side.join(
        F.broadcast(needed), ["benchmark", "benchmark_item_id", "bench_image_id"], "left_semi"
    )
    joined = candidates.join(train_side, ["sample_id", "image_id"]).join(
        F.broadcast(bench_needed), ["benchmark", "benchmark_item_id", "bench_image_id"]
    )

    def verify(frames: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for frame in frames:
            if frame.empty:
                continue
            similarity = frame["similarity"].to_numpy(np.float32)
            features = {name: np.full(len(frame), np.nan, np.float32) for name in FEATURES}
            scores = np.zeros(len(frame), np.float32)
            below = np.flatnonzero(similarity < np.float32(threshold))  # at or above: a hit, nothing to measure
            if len(below):
                verdicts = verify_pairs(
                    spec,
                    rule,
                    similarity[below],
                    list(frame["train_bytes"].iloc[below]),
                    list(frame["bench_bytes"].iloc[below]),
                    list(frame["train_text"].iloc[below]),
                    list(frame["bench_text"].iloc[below]),
                )
                for name in FEATURES:
                    features[name][below] = verdicts.features[name]
                scores[below] = verdicts.scores
            yield pd.DataFrame(
                {
                    **{name: frame[name].astype(object) for name in PAIR_KEYS},
                    "similarity": similarity,
                    **{name: features[name].astype(np.float32) for name in FEATURES},
                    "score": scores.astype(np.float32),
                    "decided_by": pd.Series(decide(similarity, scores, threshold, rule.decision), dtype=object),
                }
            )

    decided = joined.mapInPandas(verify, VERIFIED_PAIRS).filter(F.col("decided_by").isNotNull())
    by_verifier = F.col("decided_by") == VERIFIED
    evidence = F.struct(
        # NaN (an undecodable image) is stored as null
        *(F.when(~F.isnan(name), F.col(name)).alias(name) for name in FEATURES),
        "score",
        F.lit(rule.decision).cast("float").alias("decision"),
    )
    best = decided.groupBy(*HIT_GROUP).agg(
        F.max("similarity").alias("similarity"),
        F.max((F.col("decided_by") == THRESHOLD).cast("int")).alias("t"),
        F.max(by_verifier.cast("int")).alias("v"),
        # the evidence where it was measured: the best-scoring verified pair's
        F.max_by(F.when(by_verifier, evidence), F.when(by_verifier, F.col("score"))).alias("evidence"),
    )
    decided_by = (
        F.when((F.col("t") == 1) & (F.col("v") == 1), F.lit(BOTH))
        .when(F.col("t") == 1, F.lit(THRESHOLD))
        .otherwise(F.lit(VERIFIED))
    )
    return _hit_rows(best, model_id, threshold, method, decided_by, rule_id, run_id, F.col("evidence"))


VERIFIED_PAIRS = StructType(
    [
        *(StructField(name, StringType()) for name in PAIR_KEYS),
        StructField("similarity", FloatType()),
        *(StructField(name, FloatType()) for name in FEATURES),
        StructField("score", FloatType()),
        StructField("decided_by", StringType()),
    ]
)


def current_hits(hits: DataFrame, rules: Iterable[str]) -> DataFrame:
    """The hits the current configuration makes (`rule` among `rules`): a hit of another method,
    threshold, model or verifier rule that an earlier run left in the table flags nothing."""
    return hits.filter(F.col("rule").isin(list(rules)))


# ---- rates and policy -----------------------------------------------------------------------


def contamination_rates(samples: DataFrame, hits: DataFrame) -> DataFrame:
    """Per subset and overall (`subset = '*'`): contaminated samples and images, counts and rates.

    A sample is contaminated if any of its images (or, for text hits, its turns) is.
    """
    flagged_samples = hits.select("sample_id").distinct().withColumn("hit", F.lit(1))
    flagged_images = (
        hits.filter(F.col("image_id").isNotNull()).select("image_id").distinct().withColumn("hit", F.lit(1))
    )
    per_sample = samples.select("sample_id", "subset").join(flagged_samples, "sample_id", "left")
    per_image = (
        training_images(samples).select("subset", "image_id").distinct().join(flagged_images, "image_id", "left")
    )
    by_sample = per_sample.groupBy("subset").agg(
        F.count("*").alias("samples"), F.count("hit").alias("contaminated_samples")
    )
    by_image = per_image.groupBy("subset").agg(
        F.count("*").alias("images"), F.count("hit").alias("contaminated_images")
    )
    overall_samples = per_sample.agg(F.count("*").alias("samples"), F.count("hit").alias("contaminated_samples"))
    overall_images = (
        per_image.select("image_id", "hit")
        .distinct()
        .agg(F.count("*").alias("images"), F.count("hit").alias("contaminated_images"))
    )
    overall = overall_samples.crossJoin(overall_images).withColumn("subset", F.lit("*"))
    rows = by_sample.join(by_image, "subset", "full").unionByName(overall).fillna(0)
    return rows.select(
        "subset",
        "samples",
        "contaminated_samples",
        (F.col("contaminated_samples") / F.greatest(F.col("samples"), F.lit(1))).cast("float").alias("sample_rate"),
        "images",
        "contaminated_images",
        (F.col("contaminated_images") / F.greatest(F.col("images"), F.lit(1))).cast("float").alias("image_rate"),
    )


def removals(hits: DataFrame, run_id: str) -> DataFrame:
    """Policy `remove`: one removed_samples row per contaminated sample, naming its best hit."""
    best = hits.groupBy("sample_id", "subset").agg(
        F.max_by(F.struct("benchmark", "benchmark_item_id", "method"), "similarity").alias("top"),
        F.max("similarity").alias("similarity"),
        F.count("*").alias("n"),
    )
    return best.select(
        "sample_id",
        "subset",
        F.lit("decontaminate").alias("stage"),
        F.lit("contaminated").alias("reason"),
        F.format_string(
            "%d hit(s); best %s item %s (%s, similarity %.3f)",
            "n",
            "top.benchmark",
            "top.benchmark_item_id",
            "top.method",
            "similarity",
        ).alias("detail"),
        F.lit(run_id).alias("run_id"),
    )
