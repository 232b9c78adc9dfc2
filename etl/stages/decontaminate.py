"""Benchmark decontamination: image hits through a FAISS index of benchmark embeddings, and
text hits through word n-grams (which FineVision did not do).

The benchmark side is small and bounded (the 66 benchmark units), so its vectors (as Arrow) and
its hashed n-grams are gathered on the driver: the vectors into one FAISS index shipped to
executors as bytes (in the UDF's closure, or a file for multi-GB indexes) and deserialised once per
Python worker, the n-grams into sorted arrays carried in the text UDF's closure. The training side
is never collected nor shuffled: every partition of training embeddings is searched, and every
partition of training samples probed, in place.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.functions import pandas_udf
from pyspark.sql.types import ArrayType, FloatType, LongType, StringType, StructField, StructType

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
    grams: set[int] = set()
    for m in range(min(min_words, n), n + 1):
        grams.update(_hash(words[i : i + m]) for i in range(len(words) - m + 1))
    return sorted(grams)


BENCHMARK_TEXT_GRAMS = StructType(
    [
        StructField("benchmark", StringType()),
        StructField("benchmark_item_id", StringType()),
        StructField("grams", ArrayType(LongType())),
    ]
)


def benchmark_text_grams(items: DataFrame, n: int, min_words: int) -> DataFrame:
    """(benchmark, benchmark_item_id, grams): one row per distinct question or answer text of a
    benchmark item that has at least one gram. Bounded by the benchmarks' size: the job gathers it."""
    require_columns(items, ["benchmark", "item_id", "texts"], "benchmark_text_grams")

    @pandas_udf(ArrayType(LongType()))  # type: ignore[call-overload]  # stubs reject array returns; Spark has them
    def bench_grams(texts: pd.Series) -> pd.Series:
        return texts.map(lambda t: benchmark_grams(t, n, min_words))

    turn = F.explode("texts").alias("turn")
    texts = (
        items.select("benchmark", F.col("item_id").alias("benchmark_item_id"), turn)
        .select("benchmark", "benchmark_item_id", F.explode(F.array("turn.user", "turn.assistant")).alias("text"))
        .distinct()
    )
    return texts.select("benchmark", "benchmark_item_id", bench_grams("text").alias("grams")).filter(
        F.size("grams") > 0
    )


@dataclass(frozen=True)
class BenchmarkGrams:
    """The benchmark side of text decontamination as sorted arrays, small enough to travel in a
    UDF's closure (no broadcast variable: Spark Connect has none).

    `keys` are the distinct gram hashes, sorted; the texts holding `keys[i]` are
    `text_rows[offsets[i]:offsets[i + 1]]`; text t has `text_totals[t]` grams and belongs to the
    item `items[text_items[t]]` (benchmark, benchmark_item_id).
    """

    keys: np.ndarray  # int64 [g], sorted, distinct
    offsets: np.ndarray  # int64 [g + 1]
    text_rows: np.ndarray  # int64 [sum of texts' gram counts]
    text_totals: np.ndarray  # int64 [t]
    text_items: np.ndarray  # int64 [t]
    items: tuple[tuple[str, str], ...]

    @classmethod
    def from_arrow(cls, table: pa.Table) -> BenchmarkGrams:
        """From `benchmark_text_grams` gathered as Arrow (`DataFrame.toArrow()`)."""
        grams_column = table.column("grams").combine_chunks()
        totals = np.diff(grams_column.offsets.to_numpy()).astype(np.int64)
        flat = grams_column.flatten().to_numpy(zero_copy_only=False).astype(np.int64)
        owners = np.repeat(np.arange(len(totals), dtype=np.int64), totals)
        order = np.lexsort((owners, flat))
        flat, owners = flat[order], owners[order]
        keys, starts = np.unique(flat, return_index=True)
        offsets = np.append(starts, len(flat)).astype(np.int64)
        pairs = list(
            zip(table.column("benchmark").to_pylist(), table.column("benchmark_item_id").to_pylist(), strict=True)
        )
        items = sorted(set(pairs))
        item_row = {item: row for row, item in enumerate(items)}
        text_items = np.array([item_row[pair] for pair in pairs], dtype=np.int64)
        return cls(keys, offsets, owners, totals, text_items, tuple(items))

    def best_overlap(self, grams: np.ndarray) -> dict[int, float]:
        """item row -> the largest share of one of its texts' grams found in `grams` (distinct
        hashes of one training sample), for the items with any gram found."""
        if not len(self.keys) or not len(grams):
            return {}
        positions = np.searchsorted(self.keys, grams)
        found = positions < len(self.keys)
        found[found] = self.keys[positions[found]] == grams[found]
        if not found.any():
            return {}
        texts = np.concatenate([self.text_rows[self.offsets[p] : self.offsets[p + 1]] for p in positions[found]])
        matched, counts = np.unique(texts, return_counts=True)
        best: dict[int, float] = {}
        for text, count in zip(matched.tolist(), counts.tolist(), strict=True):
            item = int(self.text_items[text])
            best[item] = max(best.get(item, 0.0), count / int(self.text_totals[text]))
        return best


TEXT_OVERLAPS = StructType(
    [
        StructField("sample_id", StringType()),
        StructField("subset", StringType()),
        StructField("benchmark", StringType()),
        StructField("benchmark_item_id", StringType()),
        StructField("similarity", FloatType()),
    ]
)


def _turn_text(turn: dict | None) -> str:
    """A turn's question and answer as one text (what `concat_ws(' ', user, assistant)` gives)."""
    if not turn:
        return ""
    return " ".join(part for part in (turn.get("user"), turn.get("assistant")) if part is not None)


def text_hits(samples: DataFrame, bench: BenchmarkGrams, n: int, min_words: int, run_id: str) -> DataFrame:
    """contamination_hits rows (method `text-ngram`) for training samples with a turn sharing a gram
    with a benchmark question or answer; text-only samples included. similarity is the share of
    the benchmark text's grams found in the sample's turns (best text of the item).

    Each partition of samples is probed against `bench` in place (it travels in the UDF's
    closure): the training grams are never exploded into rows nor shuffled.
    """
    require_columns(samples, ["sample_id", "subset", "texts"], "text_hits")

    def probe(frames: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for frame in frames:
            out: dict[str, list] = {name: [] for name in TEXT_OVERLAPS.fieldNames()}
            for sample_id, subset, turns in zip(frame["sample_id"], frame["subset"], frame["texts"], strict=True):
                grams: set[int] = set()
                for turn in turns if turns is not None else ():
                    grams.update(training_grams(_turn_text(turn), n, min_words))
                overlaps = bench.best_overlap(np.fromiter(grams, dtype=np.int64, count=len(grams)))
                for item, share in sorted(overlaps.items()):
                    benchmark, item_id = bench.items[item]
                    for name, value in zip(out, (sample_id, subset, benchmark, item_id, share), strict=True):
                        out[name].append(value)
            yield pd.DataFrame(
                {
                    name: pd.Series(values, dtype=np.float32 if name == "similarity" else object)
                    for name, values in out.items()
                }
            )

    overlaps = samples.select("sample_id", "subset", "texts").mapInPandas(probe, TEXT_OVERLAPS)
    return overlaps.select(
        F.lit(None).cast("string").alias("image_id"),
        "sample_id",
        "subset",
        "benchmark",
        "benchmark_item_id",
        F.col("similarity").cast("float").alias("similarity"),
        F.lit(f"word-{n}gram").alias("model_id"),
        F.lit(None).cast("float").alias("threshold"),
        F.lit("text-ngram").alias("method"),
        F.lit(run_id).alias("run_id"),
        F.lit(None).cast(EVIDENCE).alias("evidence"),
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
