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
from udfs.knn import cached_index, search_threshold_arrays
from udfs.sscd import EmbedderSpec
from udfs.verify import FEATURES, VerifierRule, pair_features

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


def search_training_images(
    embeddings: DataFrame, index: IndexSource, threshold: float, k: int, top_k: int | None = None
) -> DataFrame:
    """(image_id, index_row, similarity) for every training embedding >= threshold to an indexed one;
    with `top_k`, only each training image's `top_k` most similar (the verified method's candidates)."""
    require_columns(embeddings, ["image_id", "embedding"], "search_training_images")

    def search(frames: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        faiss_index = cached_index(index.load, key=index.fingerprint)
        for frame in frames:
            if frame.empty:
                continue
            vectors = np.stack(frame["embedding"].to_numpy()).astype(np.float32)
            hits = search_threshold_arrays(faiss_index, vectors, tau=threshold, k=k)
            keep = top_k_per_query(hits.query_rows, hits.similarities, top_k) if top_k else slice(None)
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


def top_k_per_query(queries: np.ndarray, similarities: np.ndarray, k: int) -> np.ndarray:
    """Boolean mask keeping, for each query, its k most similar hits (ties: the earlier one)."""
    order = np.lexsort((-similarities, queries))
    rank = np.arange(len(order)) - np.searchsorted(queries[order], queries[order])
    keep = np.zeros(len(order), bool)
    keep[order[rank < k]] = True
    return keep


def image_pairs(index_hits: DataFrame, index_rows: DataFrame, training: DataFrame, benchmark: DataFrame) -> DataFrame:
    """(bench_image_id, image_id, sample_id, subset, benchmark, benchmark_item_id, similarity): the
    search's hits spread over the samples and benchmark items holding each image. index_rows maps
    `index_row` to the benchmark `bench_image_id`; training and benchmark are the occurrence frames."""
    return (
        index_hits.join(index_rows, "index_row")
        .join(training, "image_id")
        .join(benchmark.withColumnRenamed("image_id", "bench_image_id"), "bench_image_id")
    )


def image_hits(
    index_hits: DataFrame,
    index_rows: DataFrame,
    training: DataFrame,
    benchmark: DataFrame,
    model_id: str,
    threshold: float,
    method: str,
    run_id: str,
) -> DataFrame:
    """contamination_hits rows of the `threshold` method: one per (training sample image, benchmark
    item) pair over threshold, without evidence."""
    joined = image_pairs(index_hits, index_rows, training, benchmark)
    return joined.select(
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
        F.lit(None).cast(EVIDENCE).alias("evidence"),
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
    model_id: str,
    method: str,
    run_id: str,
) -> DataFrame:
    """contamination_hits rows of the `verified` method: the candidate `pairs` (from `image_pairs`)
    that the verifier accepts, each with its evidence.

    The candidates are few (top k a training image), so they are broadcast to the samples to pick up
    the training images' bytes and texts where they lie (silver is streamed once, never shuffled),
    and the benchmark images they name are broadcast to them. The verifier runs per Arrow batch of
    pairs on the executors (`udfs.verify`).
    """
    require_columns(samples, ["sample_id", "images", "texts"], "verified_hits")
    require_columns(items, ["benchmark", "item_id", "images", "texts"], "verified_hits")
    candidates = F.broadcast(
        pairs.select(
            "image_id", "sample_id", "subset", "bench_image_id", "benchmark", "benchmark_item_id", "similarity"
        )
    )
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
            features = pair_features(
                spec,
                list(frame["train_bytes"]),
                list(frame["bench_bytes"]),
                list(frame["train_text"]),
                list(frame["bench_text"]),
            )
            scores = rule.score(features)
            yield pd.DataFrame(
                {
                    **{name: frame[name].astype(object) for name in PAIR_KEYS},
                    "similarity": frame["similarity"].astype(np.float32),
                    **{name: features[name].astype(np.float32) for name in FEATURES},
                    "score": scores.astype(np.float32),
                }
            )

    measured = joined.mapInPandas(verify, VERIFIED_PAIRS)
    evidence = F.struct(
        # NaN (an undecodable image) is stored as null
        *(F.when(~F.isnan(name), F.col(name)).alias(name) for name in FEATURES),
        "score",
        F.lit(rule.decision).cast("float").alias("decision"),
    )
    verified = measured.filter(F.col("score") >= F.lit(rule.decision).cast("float")).withColumn("evidence", evidence)
    # several images of one sample may match one item: keep the best-scoring pair's evidence
    best = verified.groupBy("sample_id", "subset", "benchmark", "benchmark_item_id").agg(
        F.max_by(F.struct("image_id", "similarity", "evidence"), "evidence.score").alias("best")
    )
    return best.select(
        "best.image_id",
        "sample_id",
        "subset",
        "benchmark",
        "benchmark_item_id",
        F.col("best.similarity").cast("float").alias("similarity"),
        F.lit(model_id).alias("model_id"),
        F.lit(rule.decision).cast("float").alias("threshold"),
        F.lit(method).alias("method"),
        F.lit(run_id).alias("run_id"),
        F.col("best.evidence").alias("evidence"),
    ).select(*CONTAMINATION_HITS.fieldNames())


PAIR_KEYS = ["image_id", "sample_id", "subset", "bench_image_id", "benchmark", "benchmark_item_id"]
VERIFIED_PAIRS = StructType(
    [
        *(StructField(name, StringType()) for name in PAIR_KEYS),
        StructField("similarity", FloatType()),
        *(StructField(name, FloatType()) for name in FEATURES),
        StructField("score", FloatType()),
    ]
)


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
