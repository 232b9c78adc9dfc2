"""Merge or split turns at export (`export.turns`), without re-ingesting: FineVision's ablation of
single-image questions merged into one conversation per image, or its reverse.

    rows = reshape_turns(rated, "merge")    # DataFrame -> DataFrame, the same columns + turn_sources

`rated` is export's kept silver rows with their flags and per-turn `<axis>_ratings` (before the
`<axis>_min` columns, which are derived from the arrays afterwards). Ratings follow their turns:
turn `j` of an output row carries the scores the source turn had.

- `keep`: every row as it is.
- `split`: a sample of two or more turns becomes one row per turn. Turn `i` of sample `s` is the
  row `s/turn<i>` (0-based, as `/step<i>` of `export.gui_per_step`) with that turn alone, every
  image of `s` (a turn may refer to any of them), the turn's scores (null where it has none), and `s`'s `source`, `subset`,
  `category`, `contaminated` and `dup_cluster_id`: the release keeps or leaves out the turns of one
  sample together (`source_sample_id`). A sample of one turn (or none) is left as it is.
- `merge`: samples with exactly one image that share that image (`image_id`), `subset`, `source`,
  `category` and `contaminated` become one sample with all their turns, ordered by the sources'
  `source_ref` (file, member, row) and then `sample_id`, the order in which ingest's `group_by`
  appends rows of one file. This mirrors `group_by` (rows of one file naming the same image), at
  the scale of a whole source. The merged row's `sample_id` is the first 32 hex digits of
  sha256("merge" 0x1f id_1 0x1f ... id_n) over the source ids in turn order; its image is the
  first source's (same bytes, its `path`); its `dup_cluster_id` is the smallest of the sources'
  (the cluster of the one image, computed before the merge). Samples with no image or several
  images are never merged (a turn of a multi-image sample may be about any of its images), and a
  single-image sample whose image no other such sample shares is left as it is. Contaminated and
  clean questions of one image become two samples, so a flag on one question does not take the
  others out of the release.

Every output row says where its turns came from: `turn_sources`, one (sample_id, turn_index) of
the silver sample per turn; null for a row that is its silver sample unchanged.
"""

from __future__ import annotations

import re

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from etl.config import TurnsMode
from etl.schema import GOLD_RATING_AXES, TURN_SOURCES, require_columns

SPLIT_ID = re.compile(r"/turn[0-9]+$")  # `<sample_id>/turn<i>`: ingest's sample ids are hex digests
REQUIRED = [
    "sample_id",
    "subset",
    "category",
    "source",
    "images",
    "texts",
    "source_ref",
    "contaminated",
    "dup_cluster_id",
    *(f"{axis}_ratings" for axis in GOLD_RATING_AXES),
]


def split_id(sample_id: Column, pos: Column) -> Column:
    """The sample_id of turn `pos` (0-based) of `sample_id` split into single turns."""
    return F.concat(sample_id, F.lit("/turn"), pos.cast("string"))


def merged_id(source_ids: Column) -> Column:
    """The sample_id of a merge of the samples `source_ids` (an array, in turn order)."""
    return F.substring(F.sha2(F.concat_ws("\x1f", F.lit("merge"), source_ids), 256), 1, 32)


def source_sample_id(sample_id: Column) -> Column:
    """The sample a split row was made from (`split_id`'s inverse), else the row itself."""
    return F.regexp_replace(sample_id, SPLIT_ID.pattern, "")


def reshape_turns(rated: DataFrame, mode: TurnsMode) -> DataFrame:
    """`rated` kept, split or merged (see the module docstring), with `turn_sources` appended."""
    require_columns(rated, REQUIRED, "reshape_turns")
    if mode == "keep":
        return _unchanged(rated)
    if mode == "split":
        return _split(rated)
    if mode == "merge":
        return _merge(rated)
    raise ValueError(f"export.turns must be keep, merge or split, got {mode!r}")


def _unchanged(rows: DataFrame) -> DataFrame:
    return rows.withColumn("turn_sources", F.lit(None).cast(TURN_SOURCES))


def _scored_or_null(scores: Column) -> Column:
    """The per-turn scores, or null when no turn has one (as `rating_columns` gives an unrated sample)."""
    return F.when(F.exists(scores, lambda s: s.isNotNull()), scores)


def _split(rated: DataFrame) -> DataFrame:
    turns = F.coalesce(F.size("texts"), F.lit(0))  # size(null) is -1, or null under ANSI
    others = _unchanged(rated.filter(turns < 2))
    exploded = rated.filter(turns >= 2).select("*", F.posexplode("texts").alias("_pos", "_turn"))
    pos = F.col("_pos")
    columns = {
        "sample_id": split_id(F.col("sample_id"), pos),
        "texts": F.array(F.col("_turn")),
        **{
            f"{a}_ratings": _scored_or_null(F.array(F.try_element_at(f"{a}_ratings", (pos + 1).cast("int"))))
            for a in GOLD_RATING_AXES
        },
    }
    sources = F.array(F.struct(F.col("sample_id").alias("sample_id"), pos.cast("int").alias("turn_index")))
    per_turn = exploded.select(
        *[columns.get(name, F.col(name)).alias(name) for name in rated.columns], sources.alias("turn_sources")
    )
    return others.unionByName(per_turn)


def _merge(rated: DataFrame) -> DataFrame:
    image = F.get("images", 0)["image_id"]  # null, not an error under ANSI, for no image
    single = (F.coalesce(F.size("images"), F.lit(0)) == 1) & image.isNotNull()
    others = _unchanged(rated.filter(~single))
    key = ["subset", "source", "category", "contaminated"]
    order = F.struct(
        F.coalesce(F.col("source_ref.file"), F.lit("")).alias("file"),
        F.coalesce(F.col("source_ref.member"), F.lit("")).alias("member"),
        F.coalesce(F.col("source_ref.row"), F.lit(-1)).alias("row"),
        F.col("sample_id").alias("sample_id"),
    )
    rest = [c for c in rated.columns if c != "images"]
    part = F.struct(order.alias("_order"), *[F.col(c) for c in rest])
    groups = (
        rated.filter(single)
        .groupBy(*key, image.alias("_image"))
        .agg(
            F.count("*").alias("_n"),
            F.array_sort(F.collect_list(part)).alias("_parts"),  # in turn order: `_order` leads the struct
            F.min_by("images", order).alias("images"),  # bytes of one source per group, not of each
        )
    )
    lone = groups.filter("_n = 1").select(
        *[F.col("images") if c == "images" else F.col("_parts")[0][c].alias(c) for c in rated.columns]
    )
    parts = F.col("_parts")
    columns = {
        "sample_id": merged_id(F.transform(parts, lambda p: p["sample_id"])),
        "texts": F.flatten(F.transform(parts, lambda p: p["texts"])),
        "dup_cluster_id": F.array_min(F.transform(parts, lambda p: p["dup_cluster_id"])),
        **{
            f"{a}_ratings": _scored_or_null(
                F.flatten(
                    F.transform(
                        parts,
                        lambda p: F.coalesce(  # noqa: B023
                            p[f"{a}_ratings"],  # noqa: B023
                            F.array_repeat(F.lit(None).cast("int"), F.size(p["texts"])),
                        ),
                    )
                )
            )
            for a in GOLD_RATING_AXES
        },
    }
    sources = F.flatten(
        F.transform(
            parts,
            lambda p: F.transform(
                p["texts"], lambda _, i: F.struct(p["sample_id"].alias("sample_id"), i.alias("turn_index"))
            ),
        )
    )
    grouped = {*key, "images"}  # the other columns (source_ref, ...) are the first source's
    merged = groups.filter("_n > 1").select(
        *[columns.get(c, F.col(c) if c in grouped else parts[0][c]).alias(c) for c in rated.columns],
        sources.alias("turn_sources"),
    )
    return others.unionByName(_unchanged(lone)).unionByName(merged)
