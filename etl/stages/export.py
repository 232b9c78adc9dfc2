"""Gold export: silver samples minus removed ones, in FineVision's release columns plus the ids and
flags FineVision did not publish (`sample_id`, `subset`, `category`, `contaminated`,
`dup_cluster_id`, `turn_sources`), their turns kept, merged or split (`export.turns`,
etl/stages/turns.py) after flagging and rating.

    gold = gold_samples(silver, hits, clusters, removed, ratings, turns="keep")

`rating_columns` is the one place that turns `turn_ratings` rows into the release's
`*_ratings` arrays (one score per turn) and `*_min` values; without ratings they are nulls.
`<axis>_min` is the minimum over all turns, null unless every turn is rated: FineVision rated every
turn, so there it is the minimum over all turns; with partial ratings, a minimum over the rated
turns alone would overstate a sample whose unrated turn is its worst.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, IntegerType

from etl.schema import GOLD_RATING_AXES as RATING_AXES
from etl.schema import GOLD_SAMPLES, image_occurrences, require_columns
from etl.stages.gui_steps import trajectory_id
from etl.stages.turns import TurnsMode, reshape_turns, source_sample_id

RATING_COLUMNS = tuple(f"{axis}_ratings" for axis in RATING_AXES) + tuple(f"{axis}_min" for axis in RATING_AXES)


def contaminated_sample_ids(hits: DataFrame) -> DataFrame:
    """(sample_id) of every sample with at least one image or text hit."""
    require_columns(hits, ["sample_id"], "contaminated_sample_ids")
    return hits.select("sample_id").distinct()


def dup_cluster_ids(samples: DataFrame, clusters: DataFrame) -> DataFrame:
    """(sample_id, dup_cluster_id) for samples that share an image with another sample.

    An image's cluster is its near-duplicate cluster (the smallest image id of the component), or,
    for an image used verbatim by several samples and near no other image, its own image id; a
    sample with several such images takes the smallest. Samples with no duplicate are absent.
    """
    require_columns(samples, ["sample_id", "images"], "dup_cluster_ids")
    require_columns(clusters, ["image_id", "cluster_id"], "dup_cluster_ids")
    occurrences = image_occurrences(samples, "sample_id").distinct()
    shared = occurrences.groupBy("image_id").agg(F.count("*").alias("samples")).filter("samples > 1").select("image_id")
    image_cluster = (
        clusters.select("image_id", "cluster_id")
        .join(shared.withColumn("shared_id", F.col("image_id")), "image_id", "full_outer")
        .select("image_id", F.coalesce("cluster_id", "shared_id").alias("cluster"))
    )
    return (
        occurrences.join(image_cluster, "image_id").groupBy("sample_id").agg(F.min("cluster").alias("dup_cluster_id"))
    )


def rating_columns(samples: DataFrame, turn_ratings: DataFrame | None) -> DataFrame:
    """`samples` with `<axis>_ratings` (array<int>, one per turn, null where a turn has no score)
    and `<axis>_min` (the lowest score of the sample, null unless every turn has a score) for every
    axis; both null when the sample has no rating on that axis, or when there is no `turn_ratings`
    table. Pass the ratings of the configured judge and prompt of each axis (`current_ratings`).

    Of several scores of one turn and axis (re-runs), the one of the largest `run_id` counts;
    failed judgements (`error` set, or no score) are ignored.
    """
    require_columns(samples, ["sample_id", "texts"], "rating_columns")
    if turn_ratings is None:
        return samples.select(
            "*",
            *[F.lit(None).cast(ArrayType(IntegerType())).alias(f"{a}_ratings") for a in RATING_AXES],
            *[F.lit(None).cast(IntegerType()).alias(f"{a}_min") for a in RATING_AXES],
        )
    require_columns(turn_ratings, ["sample_id", "turn_index", "axis", "score", "error", "run_id"], "rating_columns")
    scores = (
        turn_ratings.filter(F.col("error").isNull() & F.col("score").isNotNull() & F.col("axis").isin(*RATING_AXES))
        .groupBy("sample_id", "axis", "turn_index")
        .agg(F.max_by("score", "run_id").cast("int").alias("score"))
        .groupBy("sample_id")
        .pivot("axis", list(RATING_AXES))
        .agg(F.map_from_entries(F.collect_list(F.struct("turn_index", "score"))))
    )
    turns = F.sequence(F.lit(0), F.greatest(F.size("texts") - 1, F.lit(0)))
    ratings = []
    for axis in RATING_AXES:
        by_turn = F.col(f"r.{axis}")
        aligned = F.when(F.size("texts") == 0, F.array().cast("array<int>")).otherwise(
            F.transform(turns, lambda i: F.try_element_at(by_turn, i.cast("int")))  # noqa: B023
        )
        unrated = F.coalesce(F.size(by_turn), F.lit(0)) == 0  # pivot gives an empty map to other axes' samples
        ratings.append(F.when(unrated, F.lit(None)).otherwise(aligned).alias(f"{axis}_ratings"))
    rated = samples.alias("s").join(scores.alias("r"), "sample_id", "left").select("s.*", *ratings)
    return rated.select("*", *[minimum_if_every_turn_rated(f"{a}_ratings").alias(f"{a}_min") for a in RATING_AXES])


def minimum_if_every_turn_rated(ratings: str):
    """The lowest score of a per-turn array; null when a turn has no score (or there is no turn)."""
    every_turn_rated = (F.size(ratings) > 0) & F.forall(ratings, lambda score: score.isNotNull())
    return F.when(every_turn_rated, F.array_min(ratings))


def kept_samples(silver: DataFrame, removed: DataFrame | None) -> DataFrame:
    """Silver samples no policy removed (removed_samples is written only by removal policies)."""
    if removed is None:
        return silver
    return silver.join(removed.select("sample_id").distinct(), "sample_id", "left_anti")


def removal_reasons(silver: DataFrame, removed: DataFrame | None) -> DataFrame:
    """(sample_id, reason) once per removed silver sample (the first reason by name if several)."""
    if removed is None:
        return silver.sparkSession.createDataFrame([], "sample_id string, reason string")
    return (
        removed.groupBy("sample_id").agg(F.min("reason").alias("reason")).join(silver.select("sample_id"), "sample_id")
    )


def gold_samples(
    silver: DataFrame,
    hits: DataFrame,
    clusters: DataFrame,
    removed: DataFrame | None = None,
    turn_ratings: DataFrame | None = None,
    turns: TurnsMode = "keep",
) -> DataFrame:
    """The gold rows in `GOLD_SAMPLES` column order; images projected to the release's struct<bytes, path>.

    Flags and ratings are those of the silver samples; `turns` then keeps, merges or splits them
    (`reshape_turns`: ratings follow their turns), and `<axis>_min` is taken over the rows' turns."""
    require_columns(
        silver, ["sample_id", "subset", "category", "source", "images", "texts", "source_ref"], "gold_samples"
    )
    kept = kept_samples(silver, removed)
    flagged = (
        kept.join(contaminated_sample_ids(hits).withColumn("contaminated", F.lit(True)), "sample_id", "left")
        .join(dup_cluster_ids(kept, clusters), "sample_id", "left")
        .withColumn("contaminated", F.coalesce("contaminated", F.lit(False)))
    )
    rated = rating_columns(flagged, turn_ratings).drop(*[f"{a}_min" for a in RATING_AXES])
    return (
        reshape_turns(rated, turns)
        .withColumn(
            "images", F.transform("images", lambda i: F.struct(i["bytes"].alias("bytes"), i["path"].alias("path")))
        )
        .select("*", *[minimum_if_every_turn_rated(f"{a}_ratings").alias(f"{a}_min") for a in RATING_AXES])
        .select(*GOLD_SAMPLES.fieldNames())
    )


def source_sample_ids(gold: DataFrame) -> DataFrame:
    """(sample_id) of every silver sample a gold row holds turns of, once each: a row's own id, or
    the ids in its `turn_sources` (merged and split rows)."""
    require_columns(gold, ["sample_id", "turn_sources"], "source_sample_ids")
    ids = F.coalesce(F.col("turn_sources.sample_id"), F.array("sample_id"))
    return gold.select(F.explode(ids).alias("sample_id")).distinct()


def release_exclusions(gold: DataFrame, keep_contaminated: bool, keep_duplicates: bool) -> DataFrame:
    """gold with `excluded`: null for a row the release carries, else the rule that leaves it out:
    `contaminated` (unless keep_contaminated), then `duplicate`: of the samples of one duplicate
    cluster that are left, all but the one with the smallest sample_id (unless keep_duplicates).

    The steps of a GUI trajectory (`export.gui_per_step`: `<sample_id>/step<i>`) and the turns of a
    split sample (`export.turns: split`: `<sample_id>/turn<i>`), which carry their sample's flags,
    count as that sample: they are kept or left out together, so the release holds the same
    samples with and without `gui_per_step` or split turns."""
    require_columns(gold, ["sample_id", "contaminated", "dup_cluster_id"], "release_exclusions")
    rows = gold.withColumn(
        "excluded", F.when(F.lit(not keep_contaminated) & F.col("contaminated"), F.lit("contaminated"))
    )
    if keep_duplicates:
        return rows
    # rows without a cluster never meet the join: it would send all of them to one task (null key)
    clustered = rows.filter(F.col("dup_cluster_id").isNotNull()).withColumn(
        "_unit", source_sample_id(trajectory_id(F.col("sample_id")))
    )
    representatives = (
        clustered.filter(F.col("excluded").isNull())
        .groupBy("dup_cluster_id")
        .agg(F.min("_unit").alias("_representative"))
    )
    marked = (
        clustered.join(representatives, "dup_cluster_id", "left")
        .withColumn(
            "excluded",
            F.when(F.col("excluded").isNull() & (F.col("_unit") != F.col("_representative")), "duplicate").otherwise(
                F.col("excluded")
            ),
        )
        .select(*rows.columns)
    )
    return rows.filter(F.col("dup_cluster_id").isNull()).unionByName(marked)
