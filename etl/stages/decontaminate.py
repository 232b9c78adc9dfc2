"""Benchmark decontamination: image hits through a FAISS index of benchmark embeddings, and
text hits through word n-grams (which FineVision did not do).

The benchmark side is small and bounded (the 66 benchmark units), so its vectors are gathered on
the driver into one FAISS index, shipped to executors as bytes (a broadcast, or a file for
multi-GB indexes) and deserialised once per Python worker. The training side is never collected:
every partition of training embeddings is searched in a pandas UDF.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.functions import pandas_udf
from pyspark.sql.types import ArrayType, FloatType, LongType, StringType, StructField, StructType

from etl.schema import CONTAMINATION_HITS, require_columns
from udfs.knn import cached_index, search_threshold_arrays

INDEX_HITS = StructType(
    [StructField("image_id", StringType()), StructField("index_row", LongType()), StructField("similarity", FloatType())]
)


def image_occurrences(samples: DataFrame) -> DataFrame:
    """(sample_id, subset, image_id) for every image of every sample."""
    require_columns(samples, ["sample_id", "subset", "images"], "image_occurrences")
    return samples.select("sample_id", "subset", F.explode("images.image_id").alias("image_id")).distinct()


def benchmark_occurrences(items: DataFrame) -> DataFrame:
    """(benchmark, benchmark_item_id, image_id) for every image of every benchmark item."""
    require_columns(items, ["benchmark", "item_id", "images"], "benchmark_occurrences")
    return items.select(
        "benchmark", F.col("item_id").alias("benchmark_item_id"), F.explode("images.image_id").alias("image_id")
    ).distinct()


@dataclass(frozen=True)
class IndexSource:
    """How executors get the index: a loader called once per worker, keyed by its fingerprint."""

    fingerprint: str
    load: Callable[[], bytes]


def search_training_images(
    embeddings: DataFrame, index: IndexSource, threshold: float, k: int
) -> DataFrame:
    """(image_id, index_row, similarity) for every training embedding >= threshold to an indexed one."""
    require_columns(embeddings, ["image_id", "embedding"], "search_training_images")

    def search(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        faiss_index = cached_index(index.load, key=index.fingerprint)
        for frame in frames:
            if frame.empty:
                continue
            vectors = np.stack(frame["embedding"].to_numpy()).astype(np.float32)
            hits = search_threshold_arrays(faiss_index, vectors, tau=threshold, k=k)
            image_ids = frame["image_id"].to_numpy(dtype=object)[hits.query_rows]
            # object dtype: pandas would infer an Arrow-backed string column that Spark 4.1's
            # Arrow serializer receives as a ChunkedArray and rejects.
            yield pd.DataFrame(
                {"image_id": pd.Series(image_ids, dtype=object),
                 "index_row": hits.index_rows.astype(np.int64),
                 "similarity": hits.similarities.astype(np.float32)}
            )

    return embeddings.select("image_id", "embedding").mapInPandas(search, INDEX_HITS)


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
    """contamination_hits rows: one per (training sample image, benchmark item) pair over threshold.

    index_rows maps `index_row` to the benchmark `bench_image_id`; training and benchmark are the
    occurrence frames above.
    """
    joined = (
        index_hits.join(index_rows, "index_row")
        .join(training, "image_id")
        .join(benchmark.withColumnRenamed("image_id", "bench_image_id"), "bench_image_id")
    )
    return joined.select(
        "image_id", "sample_id", "subset", "benchmark", "benchmark_item_id",
        F.col("similarity").cast("float").alias("similarity"),
        F.lit(model_id).alias("model_id"), F.lit(threshold).cast("float").alias("threshold"),
        F.lit(method).alias("method"), F.lit(run_id).alias("run_id"),
    ).select(*CONTAMINATION_HITS.fieldNames())


# ---- text side ------------------------------------------------------------------------------

_NON_WORD = re.compile(r"[^\w]+")


def normalised_words(text: str | None) -> list[str]:
    """Lower-cased NFKC words, punctuation removed: the unit n-grams are made of."""
    if not text:
        return []
    return _NON_WORD.sub(" ", unicodedata.normalize("NFKC", text).lower()).split()


def _hash(words: list[str]) -> int:
    digest = hashlib.blake2b(" ".join(words).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def benchmark_grams(text: str | None, n: int, min_words: int) -> list[int]:
    """Hashed n-grams of a benchmark text; a text of min_words..n-1 words is one gram, whole."""
    words = normalised_words(text)
    if len(words) >= n:
        return sorted({_hash(words[i : i + n]) for i in range(len(words) - n + 1)})
    return [_hash(words)] if len(words) >= min_words else []


def training_grams(text: str | None, n: int, min_words: int) -> list[int]:
    """Hashed m-grams of a training text for every m in [min_words, n]: what benchmark grams match."""
    words = normalised_words(text)
    grams = set()
    for m in range(min(min_words, n), n + 1):
        grams.update(_hash(words[i : i + m]) for i in range(len(words) - m + 1))
    return sorted(grams)


def text_hits(samples: DataFrame, items: DataFrame, n: int, min_words: int, run_id: str) -> DataFrame:
    """contamination_hits rows (method `text-ngram`) for training turns sharing a gram with a
    benchmark question or answer; text-only samples included. similarity is the share of the
    benchmark text's grams found in the turn."""
    require_columns(samples, ["sample_id", "subset", "texts"], "text_hits")

    @pandas_udf(ArrayType(LongType()))
    def bench_grams(texts: pd.Series) -> pd.Series:
        return texts.map(lambda t: benchmark_grams(t, n, min_words))

    @pandas_udf(ArrayType(LongType()))
    def train_grams(texts: pd.Series) -> pd.Series:
        return texts.map(lambda t: training_grams(t, n, min_words))

    turn = F.explode("texts").alias("turn")
    bench_texts = items.select("benchmark", F.col("item_id").alias("benchmark_item_id"), turn).select(
        "benchmark", "benchmark_item_id", F.explode(F.array("turn.user", "turn.assistant")).alias("text")
    )
    bench = bench_texts.select(
        "benchmark", "benchmark_item_id", "text", bench_grams("text").alias("grams")
    ).withColumn("total", F.size("grams")).filter("total > 0")
    bench_exploded = bench.select(
        "benchmark", "benchmark_item_id", "text", "total", F.explode("grams").alias("gram")
    )
    train = samples.select("sample_id", "subset", F.posexplode("texts").alias("turn_index", "turn")).select(
        "sample_id", "subset",
        F.explode(train_grams(F.concat_ws(" ", "turn.user", "turn.assistant"))).alias("gram"),
    ).distinct()
    matched = bench_exploded.join(train, "gram").groupBy(
        "sample_id", "subset", "benchmark", "benchmark_item_id", "text", "total"
    ).agg(F.count("*").alias("found"))
    per_item = matched.groupBy("sample_id", "subset", "benchmark", "benchmark_item_id").agg(
        F.max(F.col("found") / F.col("total")).alias("similarity")
    )
    return per_item.select(
        F.lit(None).cast("string").alias("image_id"), "sample_id", "subset", "benchmark", "benchmark_item_id",
        F.col("similarity").cast("float").alias("similarity"), F.lit(f"word-{n}gram").alias("model_id"),
        F.lit(None).cast("float").alias("threshold"), F.lit("text-ngram").alias("method"), F.lit(run_id).alias("run_id"),
    )


# ---- rates and policy -----------------------------------------------------------------------

CONTAMINATION_RATES = StructType(
    [
        StructField("subset", StringType(), nullable=False),
        StructField("samples", LongType()),
        StructField("contaminated_samples", LongType()),
        StructField("sample_rate", FloatType()),
        StructField("images", LongType()),
        StructField("contaminated_images", LongType()),
        StructField("image_rate", FloatType()),
    ]
)


def contamination_rates(samples: DataFrame, hits: DataFrame) -> DataFrame:
    """Per subset and overall (`subset = '*'`): contaminated samples and images, counts and rates.

    A sample is contaminated if any of its images (or, for text hits, its turns) is.
    """
    flagged_samples = hits.select("sample_id").distinct().withColumn("hit", F.lit(1))
    flagged_images = hits.filter(F.col("image_id").isNotNull()).select("image_id").distinct().withColumn("hit", F.lit(1))
    per_sample = samples.select("sample_id", "subset").join(flagged_samples, "sample_id", "left")
    per_image = image_occurrences(samples).select("subset", "image_id").distinct().join(flagged_images, "image_id", "left")
    by_sample = per_sample.groupBy("subset").agg(F.count("*").alias("samples"), F.count("hit").alias("contaminated_samples"))
    by_image = per_image.groupBy("subset").agg(F.count("*").alias("images"), F.count("hit").alias("contaminated_images"))
    overall_samples = per_sample.agg(F.count("*").alias("samples"), F.count("hit").alias("contaminated_samples"))
    overall_images = per_image.select("image_id", "hit").distinct().agg(
        F.count("*").alias("images"), F.count("hit").alias("contaminated_images")
    )
    overall = overall_samples.crossJoin(overall_images).withColumn("subset", F.lit("*"))
    rows = by_sample.join(by_image, "subset", "full").unionByName(overall).fillna(0)
    return rows.select(
        "subset", "samples", "contaminated_samples",
        (F.col("contaminated_samples") / F.greatest(F.col("samples"), F.lit(1))).cast("float").alias("sample_rate"),
        "images", "contaminated_images",
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
        "sample_id", "subset", F.lit("decontaminate").alias("stage"), F.lit("contaminated").alias("reason"),
        F.format_string(
            "%d hit(s); best %s item %s (%s, similarity %.3f)", "n", "top.benchmark", "top.benchmark_item_id",
            "top.method", "similarity",
        ).alias("detail"),
        F.lit(run_id).alias("run_id"),
    )
