"""Turn-level quality ratings: which (turn, axis, judge, prompt) still needs a score, the judge
UDF, the per-subset score distribution, and the `*_ratings` / `*_min` arrays of the gold export.

The judges themselves (prompts, score extraction, backends) are in `udfs/judge.py`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import pandas as pd
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, BinaryType

from etl.reference import RATING_SHARES
from etl.schema import RATE_REQUEST, RATING_AXES, RATING_DISTRIBUTION, TURN_RATINGS, require_columns
from udfs.judge import (
    IMAGE_AXES,
    NO_IMAGE,
    NO_JUDGE_MODEL,
    NO_VLM_JUDGE,
    REQUEST_FAILED,
    JudgePrompt,
    JudgeRequest,
    JudgeSpec,
    Verdict,
)
from udfs.judge_backends import get_backend

RATING_KEYS = ["sample_id", "turn_index", "axis", "judge_model", "prompt_hash"]


@dataclass(frozen=True)
class AxisJudge:
    """Who rates an axis with which prompt; `judge` None means no judge is configured for it."""

    axis: str
    prompt: JudgePrompt
    judge: JudgeSpec | None

    @property
    def judge_model(self) -> str:
        return self.judge.judge_model if self.judge else NO_JUDGE_MODEL

    @property
    def prompt_hash(self) -> str:
        return self.prompt.prompt_hash


def turn_requests(
    samples: DataFrame, assignments: list[AxisJudge], max_turns_per_subset: int | None = None
) -> DataFrame:
    """(sample_id, turn_index, axis, judge_model, prompt_hash): every turn on every axis, or a
    fixed sample of at most `max_turns_per_subset` turns per subset (the same turns every run)."""
    require_columns(samples, ["sample_id", "subset", "texts"], "turn_requests")
    spark = samples.sparkSession
    axes = spark.createDataFrame(
        [(a.axis, a.judge_model, a.prompt_hash) for a in assignments],
        "axis string, judge_model string, prompt_hash string",
    )
    turns = samples.select("sample_id", "subset", F.posexplode("texts").alias("turn_index", "turn")).select(
        "sample_id", "subset", F.col("turn_index").cast("int").alias("turn_index")
    )
    if max_turns_per_subset is not None:
        order = Window.partitionBy("subset").orderBy(F.xxhash64("sample_id", "turn_index"), "sample_id", "turn_index")
        turns = turns.withColumn("_rank", F.row_number().over(order)).filter(F.col("_rank") <= max_turns_per_subset)
    return turns.select("sample_id", "turn_index").crossJoin(F.broadcast(axes))


def settled_ratings(ratings: DataFrame) -> DataFrame:
    """Ratings a later run keeps: a score, or a final error. Failed requests are tried again."""
    return ratings.filter(
        F.col("score").isNotNull() | ~F.coalesce(F.col("error").startswith(REQUEST_FAILED), F.lit(False))
    )


def pending_requests(requests: DataFrame, ratings: DataFrame | None) -> DataFrame:
    """The requests without a settled rating for the same (sample, turn, axis, judge, prompt)."""
    if ratings is None:
        return requests
    return requests.join(settled_ratings(ratings).select(*RATING_KEYS), RATING_KEYS, "left_anti")


def pending_work(samples: DataFrame, pending: DataFrame, assignments: list[AxisJudge], n_chunks: int = 1) -> DataFrame:
    """Rows of `rate_pending`: per sample with pending requests, its requests, its texts and (only
    when an image axis has a judge and the sample has a request on it) its image bytes; `chunk` is
    the sample's range of sample_id (`sample_id_range`), so all of a sample's requests are committed
    together and each chunk's commit touches one range of `turn_ratings`.

    The one place the judges' inputs are joined to the keys: the rate job writes this once per run,
    partitioned by chunk, and each chunk then reads its own rows, not the samples again."""
    require_columns(pending, RATING_KEYS, "pending_work")
    require_columns(samples, ["sample_id", "texts", "images"], "pending_work")
    request = F.struct(*(F.col(name) for name in RATE_REQUEST.fieldNames()))
    requests = pending.groupBy("sample_id").agg(F.collect_list(request).alias("requests"))
    images_judged = any(a.axis in IMAGE_AXES and a.judge is not None for a in assignments)
    content = samples.select("sample_id", "texts", *(["images"] if images_judged else []))
    if images_judged:
        on_image_axis = F.exists("requests", lambda r: r["axis"].isin(*IMAGE_AXES))
        images = F.when(on_image_axis, F.transform("images", lambda image: image["bytes"]))
    else:
        images = F.lit(None)
    return requests.join(content, "sample_id").select(
        sample_id_range(n_chunks).alias("chunk"),
        "sample_id",
        "requests",
        "texts",
        images.cast(ArrayType(BinaryType())).alias("images"),
    )


def sample_id_range(n_ranges: int) -> Column:
    """Which of `n_ranges` equal ranges of sample_id a row falls in, by its first 8 hex digits
    (sample_ids are hex digests, so the ranges hold about equal shares). Chunking by range, not by
    hash, lets each chunk's MERGE skip the files of `turn_ratings` that other chunks wrote (Delta's
    min/max statistics on sample_id). An id that is not hex falls back to a hash: still a partition
    of the rows, only without the skipping."""
    prefix = F.conv(F.substring("sample_id", 1, 8), 16, 10).cast("long")
    is_hex = F.col("sample_id").rlike("^[0-9a-f]{8}")
    by_range = F.floor(prefix * F.lit(n_ranges) / F.lit(16**8))
    by_hash = F.pmod(F.xxhash64("sample_id"), F.lit(n_ranges))
    return F.when(is_hex, by_range).otherwise(by_hash).cast("int")


def rate_turns(
    work: DataFrame,
    assignments: list[AxisJudge],
    run_id: str,
    max_text_chars: int,
    partitions: int | None = None,
    profile=None,
) -> DataFrame:
    """Rows of `turn_ratings` for the requests of `pending_work` rows, one each; the judges run in
    mapInPandas, in `partitions` tasks when given (each task's Python worker loads a local model
    once), under the stage's `ResourceProfile` when given (`etl.resources`: a GPU per task on GPU
    clusters). Each request reads its turn and images from its own row: no join."""
    require_columns(work, ["sample_id", "requests", "texts", "images"], "rate_turns")
    request = F.col("request")
    turn = F.element_at("texts", request["turn_index"] + 1)
    rows = work.select("sample_id", "texts", "images", F.explode("requests").alias("request")).select(
        "sample_id",
        *(request[name].alias(name) for name in RATE_REQUEST.fieldNames()),
        turn["user"].alias("question"),
        turn["assistant"].alias("answer"),
        F.when(request["axis"].isin(*IMAGE_AXES), F.col("images")).alias("images"),
    )
    by_axis = {a.axis: a for a in assignments}

    def judge(batches: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            yield _judge_batch(batch, by_axis, max_text_chars).assign(run_id=run_id)

    if partitions:
        rows = rows.repartition(partitions)
    return rows.mapInPandas(judge, TURN_RATINGS, profile=profile)


def _judge_batch(batch: pd.DataFrame, by_axis: dict[str, AxisJudge], max_text_chars: int) -> pd.DataFrame:
    verdicts: list[Verdict | None] = [None] * len(batch)
    for axis, rows in batch.groupby("axis", sort=False).indices.items():
        assignment = by_axis[axis]
        if assignment.judge is None:
            for i in rows:
                verdicts[i] = Verdict(None, None, NO_VLM_JUDGE)
            continue
        asked = []
        for i in rows:
            images = batch["images"].iat[i]
            images = tuple(bytes(b) for b in images if b is not None) if images is not None else ()
            if axis in IMAGE_AXES and not images:
                verdicts[i] = Verdict(None, None, NO_IMAGE)
                continue
            prompt = assignment.prompt.render(batch["question"].iat[i], batch["answer"].iat[i], max_text_chars)
            asked.append((i, JudgeRequest(prompt, images)))
        if asked:
            answers = get_backend(assignment.judge).rate([request for _, request in asked])
            for (i, _), verdict in zip(asked, answers, strict=False):
                verdicts[i] = verdict
    done = [v if v is not None else Verdict(None, None, "not judged") for v in verdicts]  # every row is set above
    return pd.DataFrame(
        {
            "sample_id": batch["sample_id"],
            "turn_index": batch["turn_index"].astype("int32"),
            "axis": batch["axis"],
            "score": pd.array([v.score for v in done], dtype="Int32"),
            "expected_score": pd.array([v.expected_score for v in done], dtype="Float32"),
            "judge_model": batch["judge_model"],
            "prompt_hash": batch["prompt_hash"],
            "error": [v.error for v in done],
        }
    )


def current_ratings(ratings: DataFrame, judges: dict[str, tuple[str, str]]) -> DataFrame:
    """The ratings of the chosen (judge_model, prompt_hash) per axis."""
    chosen = F.lit(False)
    for axis, (judge_model, prompt_hash) in judges.items():
        chosen = chosen | (
            (F.col("axis") == axis) & (F.col("judge_model") == judge_model) & (F.col("prompt_hash") == prompt_hash)
        )
    return ratings.filter(chosen)


def rating_distribution(samples: DataFrame, ratings: DataFrame, judges: dict[str, tuple[str, str]]) -> DataFrame:
    """(subset, axis, score, n, share, judge_model, prompt_hash) over scored turns, per subset and
    for all subsets (`*`); share is within (subset, axis)."""
    require_columns(samples, ["sample_id", "subset"], "rating_distribution")
    scored = (
        current_ratings(ratings, judges)
        .filter(F.col("score").isNotNull())
        .join(samples.select("sample_id", "subset"), "sample_id")
    )
    keys = ["axis", "score", "judge_model", "prompt_hash"]
    per_subset = scored.groupBy("subset", *keys).agg(F.count("*").alias("n"))
    overall = scored.groupBy(*keys).agg(F.count("*").alias("n")).withColumn("subset", F.lit("*"))
    counts = per_subset.unionByName(overall)
    share = F.col("n") / F.sum("n").over(Window.partitionBy("subset", "axis"))
    return counts.withColumn("share", share.cast("float")).select(*RATING_DISTRIBUTION.fieldNames())


def distribution_comparison(rows: list[dict]) -> str:
    """A text table: for each axis, % of turns per score here (subset `*`) next to FineVision's."""
    ours: dict[str, dict[int, float]] = {}
    totals: dict[str, int] = {}
    for row in rows:
        if row["subset"] == "*":
            ours.setdefault(row["axis"], {})[row["score"]] = 100 * row["share"]
            totals[row["axis"]] = totals.get(row["axis"], 0) + row["n"]
    lines = [f"{'axis':<22} {'':<11} {'1':>6} {'2':>6} {'3':>6} {'4':>6} {'5':>6}   turns"]
    for axis in RATING_AXES:
        published = RATING_SHARES[axis]
        lines.append(f"{axis:<22} {'FineVision':<11} " + " ".join(f"{p:>5.1f}%" for p in published))
        if axis in ours:
            shares = [ours[axis].get(score, 0.0) for score in range(1, 6)]
            lines.append(f"{'':<22} {'this run':<11} " + " ".join(f"{p:>5.1f}%" for p in shares) + f"   {totals[axis]}")
        else:
            lines.append(f"{'':<22} {'this run':<11} (no scores)")
    return "\n".join(lines)
