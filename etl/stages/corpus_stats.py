"""FineVision's per-subset table, per subset, per category and in total (`subset_stats`).

Every figure is an aggregate computed in Spark over one row per sample (counts, tokens,
duplicate / contamination flags, rating sums) and one row per image occurrence (resolution);
`rollup(category, subset)` yields the three levels in one pass. Nothing is collected.

    stats = subset_stats(silver, tokenizer_json, hits=hits, clusters=clusters, ratings=ratings)
"""

from __future__ import annotations

import pandas as pd
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.functions import pandas_udf
from pyspark.sql.types import (
    FloatType,
    LongType,
    StructField,
    StructType,
)

from etl.schema import RATING_AXES, image_occurrences, require_columns
from udfs.tokens import count_tokens, load_tokenizer

LEVELS = ("subset", "category", "total")
TOTAL = "*"

_TOKENS = StructType([StructField("question_tokens", LongType()), StructField("answer_tokens", LongType())])


def token_counter(tokenizer_json: str):
    """A pandas UDF: array<struct<user, assistant>> -> struct<question_tokens, answer_tokens> (SmolLM2)."""

    @pandas_udf(_TOKENS)  # type: ignore[call-overload]  # stubs omit struct returns of a scalar UDF; Spark has them
    def tokens(texts: pd.Series) -> pd.DataFrame:
        tokenizer = load_tokenizer(tokenizer_json)
        questions, answers = [], []
        for turns in texts:
            turns = list(turns) if turns is not None else []
            counts = count_tokens(tokenizer, [t[k] or "" for t in turns for k in ("user", "assistant")])
            questions.append(sum(counts[0::2]))
            answers.append(sum(counts[1::2]))
        return pd.DataFrame({"question_tokens": questions, "answer_tokens": answers})

    return tokens


def slim_samples(samples: DataFrame) -> DataFrame:
    """The columns analytics read, without image bytes (persist it: every figure scans it)."""
    require_columns(samples, ["sample_id", "subset", "category", "images", "texts"], "analytics")
    images = F.transform(
        F.coalesce("images", F.array()),
        lambda i: F.struct(i["image_id"].alias("image_id"), i["width"].alias("width"), i["height"].alias("height")),
    )
    return samples.select("sample_id", "subset", "category", images.alias("images"), "texts")


def _flags(ids: DataFrame, flag: str) -> DataFrame:
    return ids.distinct().withColumn(flag, F.lit(True))


def sample_facts(
    samples: DataFrame,
    tokenizer_json: str,
    hits: DataFrame | None = None,
    clusters: DataFrame | None = None,
    ratings: DataFrame | None = None,
) -> DataFrame:
    """One row per sample: counts, tokens, duplicate / contamination flags, rating sums and counts."""
    require_columns(samples, ["sample_id", "subset", "category", "images", "texts"], "subset_stats")
    tokens = token_counter(tokenizer_json)
    facts = (
        samples.select(
            "sample_id",
            "subset",
            "category",
            F.size(F.coalesce("images", F.array())).alias("n_images"),
            F.size(F.coalesce("texts", F.array())).alias("n_turns"),
            tokens("texts").alias("tokens"),
        )
        .select("*", "tokens.*")
        .drop("tokens")
    )

    occurrences = image_occurrences(samples, "sample_id").distinct()
    shared = occurrences.groupBy("image_id").agg(F.count(F.lit(1)).alias("holders")).filter("holders > 1")
    facts = facts.join(
        _flags(occurrences.join(shared, "image_id").select("sample_id"), "exact_dup"), "sample_id", "left"
    )
    if clusters is not None:
        near = occurrences.join(clusters.select("image_id").distinct(), "image_id").select("sample_id")
        facts = facts.join(_flags(near, "near_dup"), "sample_id", "left")
    else:
        facts = facts.withColumn("near_dup", F.lit(None).cast("boolean"))
    if hits is not None:
        facts = facts.join(_flags(hits.select("sample_id"), "contaminated"), "sample_id", "left")
    else:
        facts = facts.withColumn("contaminated", F.lit(None).cast("boolean"))
    if ratings is not None:
        require_columns(ratings, ["sample_id", "axis", "score"], "subset_stats (turn_ratings)")
        sums = (
            ratings.filter(F.col("score").isNotNull())
            .groupBy("sample_id")
            .pivot("axis", list(RATING_AXES))
            .agg(F.sum("score").alias("sum"), F.count("score").alias("n"))
        )
        facts = facts.join(sums, "sample_id", "left")
    else:
        for axis in RATING_AXES:
            facts = facts.withColumn(f"{axis}_sum", F.lit(None).cast("long")).withColumn(
                f"{axis}_n", F.lit(None).cast("long")
            )
    return facts


def _level() -> Column:
    return (
        F.when(F.grouping("category") == 1, F.lit("total"))
        .when(F.grouping("subset") == 1, F.lit("category"))
        .otherwise(F.lit("subset"))
    )


def _key(frame: DataFrame) -> DataFrame:
    """Rollup output -> (level, name, category, ...)."""
    level = F.col("level")
    name = (
        F.when(level == "total", F.lit(TOTAL)).when(level == "category", F.col("category")).otherwise(F.col("subset"))
    )
    return frame.withColumn("name", name).drop("subset")


def _share(part: str, whole: str) -> Column:
    return F.when(F.col(whole) > 0, F.col(part) / F.col(whole))


def subset_stats(
    samples: DataFrame,
    tokenizer_json: str,
    hits: DataFrame | None = None,
    clusters: DataFrame | None = None,
    ratings: DataFrame | None = None,
) -> DataFrame:
    """SUBSET_STATS rows for every subset, every category and the total.

    `hits` (contamination_hits), `clusters` (near_duplicate_clusters) and `ratings`
    (turn_ratings) are optional: a figure whose table is absent is null, never zero.
    """
    facts = sample_facts(samples, tokenizer_json, hits, clusters, ratings)
    by_sample = facts.rollup("category", "subset").agg(
        _level().alias("level"),
        F.count(F.lit(1)).alias("samples"),
        F.sum("n_images").alias("images"),
        F.sum("n_turns").alias("turns"),
        F.sum("question_tokens").alias("question_tokens"),
        F.sum("answer_tokens").alias("answer_tokens"),
        F.count("exact_dup").alias("exact_dups"),
        F.count("near_dup").alias("near_dups"),
        F.count("contaminated").alias("contaminated"),
        *[F.sum(f"{axis}_sum").alias(f"{axis}_sum") for axis in RATING_AXES],
        *[F.sum(f"{axis}_n").alias(f"{axis}_n") for axis in RATING_AXES],
    )
    by_sample = _key(by_sample)

    images = image_occurrences(samples, "subset", "category", fields=("image_id", "width", "height")).select(
        "subset",
        "category",
        "image_id",
        F.greatest("width", "height").alias("side"),
        (F.col("width").cast("double") * F.col("height") / 1e6).alias("megapixels"),
    )
    if hits is not None:
        flagged = _flags(hits.filter(F.col("image_id").isNotNull()).select("image_id"), "hit")
        images = images.join(flagged, "image_id", "left")
    else:
        images = images.withColumn("hit", F.lit(None).cast("boolean"))
    by_image = _key(
        images.rollup("category", "subset").agg(
            _level().alias("level"),
            F.percentile_approx("side", [0.1, 0.5, 0.9], 1000).alias("sides"),
            F.percentile_approx("megapixels", 0.5, 1000).alias("megapixels_p50"),
            F.countDistinct("image_id").alias("distinct_images"),
            F.countDistinct(F.when(F.col("hit"), F.col("image_id"))).alias("contaminated_images"),
        )
    )
    joined = by_sample.join(by_image.drop("category"), ["level", "name"], "left")
    totals = joined.filter(F.col("level") == "total").select(
        F.col("samples").alias("all_samples"), F.col("answer_tokens").alias("all_answer_tokens")
    )
    joined = joined.crossJoin(F.broadcast(totals))
    has_hits, has_clusters = F.lit(hits is not None), F.lit(clusters is not None)
    return joined.select(
        "level",
        "name",
        "category",
        "samples",
        F.coalesce("images", F.lit(0)).cast("long").alias("images"),
        F.coalesce("turns", F.lit(0)).cast("long").alias("turns"),
        F.coalesce("question_tokens", F.lit(0)).cast("long").alias("question_tokens"),
        F.coalesce("answer_tokens", F.lit(0)).cast("long").alias("answer_tokens"),
        _share("samples", "all_samples").alias("sample_share"),
        _share("answer_tokens", "all_answer_tokens").alias("answer_token_share"),
        _share("images", "samples").alias("images_per_sample"),
        _share("turns", "samples").alias("turns_per_sample"),
        F.col("sides")[0].cast("int").alias("side_p10"),
        F.col("sides")[1].cast("int").alias("side_p50"),
        F.col("sides")[2].cast("int").alias("side_p90"),
        F.col("megapixels_p50").cast("double").alias("megapixels_p50"),
        _share("exact_dups", "samples").alias("exact_duplicate_share"),
        F.when(has_clusters, _share("near_dups", "samples")).alias("near_duplicate_share"),
        F.when(has_hits, _share("contaminated", "samples")).alias("contaminated_sample_rate"),
        F.when(has_hits, F.coalesce(_share("contaminated_images", "distinct_images"), F.lit(0.0))).alias(
            "contaminated_image_rate"
        ),
        *[_share(f"{axis}_sum", f"{axis}_n").cast("double").alias(f"rating_{axis}") for axis in RATING_AXES],
    ).orderBy(F.array_position(F.array(*[F.lit(x) for x in LEVELS]), F.col("level")), "category", "name")


def rating_distribution(ratings: DataFrame) -> DataFrame:
    """(axis, score, turns, share of the axis's rated turns), scores 1..5; null scores (judge errors) excluded."""
    require_columns(ratings, ["axis", "score"], "rating_distribution")
    rated = ratings.filter(F.col("score").isNotNull()).groupBy("axis", "score").agg(F.count(F.lit(1)).alias("turns"))
    share = F.col("turns") / F.sum("turns").over(Window.partitionBy("axis"))
    return rated.select(
        "axis", F.col("score").cast("int").alias("score"), "turns", share.cast(FloatType()).alias("share")
    )
