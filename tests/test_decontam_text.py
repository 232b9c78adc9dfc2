"""Text decontamination probes each partition of training samples against the benchmark grams it
carries in its closure: planted copies are found, and nothing over the training grams is shuffled."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from pyspark.sql.types import ArrayType, StringType, StructField, StructType

from etl.schema import TURN
from etl.stages.text_decontam import BenchmarkGrams, benchmark_text_grams, text_hits
from udfs.knn import vectors_from_arrow

WORDS = [f"w{i}" for i in range(15)]
QUESTION = " ".join(WORDS)  # 15 words: three 13-grams
ANSWER = "the answer is the blue bicycle leaning on the red brick wall of the station"  # 15 words

SAMPLES = StructType(
    [StructField("sample_id", StringType()), StructField("subset", StringType()), StructField("texts", ArrayType(TURN))]
)
ITEMS = StructType(
    [
        StructField("benchmark", StringType()),
        StructField("item_id", StringType()),
        StructField("texts", ArrayType(TURN)),
    ]
)


def turn(user, assistant=None):
    return {"user": user, "assistant": assistant}


@pytest.fixture
def frames(spark):
    items = spark.createDataFrame(
        [
            ("toy", "q1", [turn(QUESTION, "yes")]),
            ("toy", "q2", [turn("what is leaning on the wall", ANSWER)]),
            ("toy", "q3", [turn("a short question", "no")]),  # no 13-gram: never matched
        ],
        ITEMS,
    )
    samples = spark.createDataFrame(
        [
            ("s_full", "a", [turn("Please: " + QUESTION.upper() + "!", "ok")]),  # whole question: 3 of 3 grams
            ("s_part", "a", [turn("hi"), turn(" ".join(WORDS[:14]), None)]),  # 14 words: 2 of 3 grams
            ("s_split", "b", [turn(" ".join(WORDS[:7])), turn(" ".join(WORDS[7:]))]),  # across turns: no gram
            ("s_answer", "b", [turn("tell me", ANSWER + " today")]),  # the answer of q2
            ("s_none", "b", None),
            ("s_clean", "b", [turn("an unrelated question about cats", "cats sleep a lot")]),
        ],
        SAMPLES,
    )
    return samples, items


def plan_of(frame) -> str:
    return frame._jdf.queryExecution().executedPlan().toString()


def test_text_hits_find_the_planted_copies_without_shuffling_training_grams(spark, frames):
    samples, items = frames
    bench = BenchmarkGrams.from_arrow(benchmark_text_grams(items, 13, 13).toArrow())
    assert sorted(set(bench.items)) == [("toy", "q1"), ("toy", "q2")]

    hits = text_hits(samples.repartition(3), bench, 13, 13, "run-1")
    found = {(r["sample_id"], r["benchmark_item_id"]): r["similarity"] for r in hits.collect()}
    assert found == {("s_full", "q1"): 1.0, ("s_part", "q1"): pytest.approx(2 / 3), ("s_answer", "q2"): 1.0}
    assert {r["method"] for r in hits.collect()} == {"text-ngram"}

    # The old design joined exploded training grams with the benchmark grams, then grouped: two
    # shuffles over every gram of the corpus. Here the only Exchange is the test's repartition.
    plan = text_hits(samples, bench, 13, 13, "run-1")
    assert "Exchange" not in plan_of(plan), plan_of(plan)


def test_short_benchmark_texts_match_whole_when_allowed(spark, frames):
    samples, items = frames
    bench = BenchmarkGrams.from_arrow(benchmark_text_grams(items, 13, 3).toArrow())
    extra = spark.createDataFrame([("s_short", "c", [turn("so, A SHORT QUESTION here")])], SAMPLES)
    found = {
        (r["sample_id"], r["benchmark_item_id"]) for r in text_hits(samples.union(extra), bench, 13, 3, "r").collect()
    }
    assert ("s_short", "q3") in found and ("s_clean", "q3") not in found


def test_benchmark_grams_of_no_benchmark_probe_nothing(spark, frames):
    samples, items = frames
    bench = BenchmarkGrams.from_arrow(benchmark_text_grams(items.limit(0), 13, 13).toArrow())
    assert len(bench.keys) == 0 and text_hits(samples, bench, 13, 13, "r").count() == 0


def test_vectors_from_arrow_keeps_rows_in_order():
    table = pa.table({"image_id": ["a", "b"], "embedding": [[1.0, 0.0, 0.5], [0.0, 1.0, 0.25]]})
    assert np.array_equal(vectors_from_arrow(table), np.array([[1, 0, 0.5], [0, 1, 0.25]], np.float32))
    with pytest.raises(ValueError, match="one length"):
        vectors_from_arrow(pa.table({"embedding": [[1.0], [1.0, 2.0]]}))
