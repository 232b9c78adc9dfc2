"""Text decontamination (which FineVision did not do): a training turn that repeats a benchmark
question or answer, found through hashed word n-grams.

The benchmark side is small and bounded, so its hashed n-grams are gathered on the driver into
sorted arrays carried in the text UDF's closure; every partition of training samples is probed in
place, never shuffled.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.functions import pandas_udf
from pyspark.sql.types import ArrayType, FloatType, LongType, StringType, StructField, StructType

from etl.schema import EVIDENCE, require_columns
from udfs.words import normalised_words


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
