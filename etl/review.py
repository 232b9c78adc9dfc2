"""`finevision review`: HTML pages for a human to judge what decontamination and dedup found.

    write_contamination_review(spark, config, Path("reports/contamination.html"))
    write_duplicate_review(spark, config, Path("reports/duplicates.html"))

The contamination page puts each hit's training image beside the benchmark image, with the score
and both texts (text hits: the two texts side by side with their n-gram overlap). The duplicate
page shows the largest near-duplicate clusters as thumbnail grids.

Only the top `limit` hits (or `max_clusters` clusters of `max_images` images) are joined to the
samples, and thumbnails are made in Spark, so the driver receives a few hundred small JPEGs and
some truncated text: never the corpus. Pages are rendered from etl/templates/ by `etl.pages`, which
escapes every text; they are self-contained (images as data: URIs, no scripts, no external links)
and name the table versions they read, for lineage.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, StringType, StructField, StructType

from etl.config import PipelineConfig
from etl.pages import Thumbnail, render, thumbnail
from etl.reuse import pinned
from etl.runs import read_pinned
from etl.schema import image_occurrences

THUMBNAIL_SIZE = 240
GRID_THUMBNAIL_SIZE = 160
TURNS_SHOWN = 2  # first turns of each sample / benchmark item
TEXT_CHARS = 400  # characters shown of each user / assistant text
BENCH_IMAGES_SHOWN = 4  # images shown of a multi-image benchmark item
HOLDERS_SHOWN = 5  # samples listed under a duplicate image

EVIDENCE_LABELS = {
    "sscd_whole": "SSCD, whole images",
    "sscd_views": "SSCD, best view pair",
    "inliers": "ORB+RANSAC inliers",
    "inlier_area": "area the inliers cover",
    "aligned_ncc": "aligned correlation (median)",
    "aligned_ncc_low": "aligned correlation (20th pct)",
    "text_overlap": "text overlap",
    "aligned_coverage": "share of the benchmark image covered after alignment",
    "tiles_agree": "aligned tiles that agree",
    "tiles_occluded": "aligned tiles occluded (caption, sticker)",
    "tiles_changed": "aligned tiles with other content",
    "occluder_fill": "largest occluded region: fill of its box",
    "occluder_scattered": "occluded tiles outside it",
    "residual_peak": "worst tile's grey-level difference away from it",
    "tiles_textured": "aligned tiles that agree on texture",
    "tiles_unexplained": "aligned tiles with content no one occluder explains",
    "frame_nesting": "one image's frame inside the other's after alignment",
}

THUMBNAILS = ArrayType(StructType([StructField(name, StringType()) for name in Thumbnail._fields]))


def _thumbnails(size: int):
    """array<binary> -> array<struct<jpeg_base64, note>> (`etl.pages.Thumbnail`), on executors."""

    def thumbs(images):
        return [thumbnail(data, size) for data in images or []]

    return F.udf(thumbs, THUMBNAILS)


def _first_turns(column: str):
    """The first turns, each text cut to TEXT_CHARS + 1 characters (so the page knows it was cut)."""
    return F.transform(
        F.slice(F.coalesce(F.col(column), F.array()), 1, TURNS_SHOWN),
        lambda t: F.struct(
            F.substring(t["user"], 1, TEXT_CHARS + 1).alias("user"),
            F.substring(t["assistant"], 1, TEXT_CHARS + 1).alias("assistant"),
        ),
    )


# ---- rendering (templates/contamination.html and duplicates.html, on collected rows) ---------


def render_contamination_page(
    hits: list[dict], counts: list[dict], versions: dict[str, int], config: PipelineConfig, limit: int
) -> str:
    """The page from collected rows: `hits` (top hits, best first, with thumbnails and turns) and
    `counts` (benchmark, method, hits, samples over the whole table)."""
    return render(
        "contamination.html",
        title="contamination review",
        hits=hits,
        counts=counts,
        versions=versions,
        lakehouse=config.catalog or config.lakehouse,
        limit=limit,
        text_chars=TEXT_CHARS,
        evidence_labels=EVIDENCE_LABELS,
    )


def render_duplicate_page(
    clusters: list[dict], images: list[dict], totals: dict, versions: dict[str, int], config: PipelineConfig
) -> str:
    """The page from collected rows: `clusters` (largest first), `images` (cluster_id, rank, ...)."""
    by_cluster: dict[str, list[dict]] = {}
    for image in sorted(images, key=lambda i: i["rank"]):
        by_cluster.setdefault(image["cluster_id"], []).append(image)
    return render(
        "duplicates.html",
        title="near-duplicate review",
        clusters=clusters,
        images_by_cluster=by_cluster,
        totals=totals,
        versions=versions,
        lakehouse=config.catalog or config.lakehouse,
    )


def _write(out: Path, page: str) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out


# ---- Spark side -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Inputs:
    frames: dict[str, DataFrame]
    versions: dict[str, int]


def _inputs(spark: SparkSession, config: PipelineConfig, names: list[str]) -> _Inputs:
    versions: dict[str, int] = {}
    frames = {name: read_pinned(spark, config, name, versions) for name in names}
    return _Inputs(frames, versions)


def write_contamination_review(spark: SparkSession, config: PipelineConfig, out: Path, limit: int = 200) -> Path:
    """The top `limit` contamination hits by similarity, each beside its benchmark item."""
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    inputs = _inputs(spark, config, ["contamination_hits", "silver_samples", "benchmark_items"])
    hits, silver, items = (inputs.frames[n] for n in ("contamination_hits", "silver_samples", "benchmark_items"))
    from etl.jobs.decontaminate import current_rules
    from etl.stages.decontaminate import current_hits

    hits = current_hits(hits, current_rules(config).values())  # an earlier configuration's hits are not shown

    counts = [
        r.asDict()
        for r in hits.groupBy("benchmark", "method")
        .agg(F.count(F.lit(1)).alias("hits"), F.countDistinct("sample_id").alias("samples"))
        .orderBy("benchmark", "method")
        .collect()
    ]
    if not counts:
        return _write(out, render_contamination_page([], counts, inputs.versions, config, limit))
    order: list[str | Column] = [
        F.desc_nulls_last("similarity"),
        "benchmark",
        "benchmark_item_id",
        "sample_id",
        F.asc_nulls_first("image_id"),
    ]
    # one pinned set of rows for both joins; on serverless (no checkpoints) recomputed, and the
    # order above is total over pinned table versions, so every computation gives the same rows
    top = pinned(hits.orderBy(*order).limit(limit))
    train = silver.join(F.broadcast(top.select("sample_id").distinct()), "sample_id").select(
        "sample_id",
        F.col("images").alias("train_images"),
        _first_turns("texts").alias("train_turns"),
        F.size("texts").alias("train_turn_count"),
    )
    keys = top.select("benchmark", F.col("benchmark_item_id").alias("item_id")).distinct()
    bench = items.join(F.broadcast(keys), ["benchmark", "item_id"]).select(
        "benchmark",
        F.col("item_id").alias("benchmark_item_id"),
        F.col("images").alias("bench_images"),
        _first_turns("texts").alias("bench_turns"),
        F.size("texts").alias("bench_turn_count"),
    )
    joined = top.join(train, "sample_id", "left").join(bench, ["benchmark", "benchmark_item_id"], "left")
    image_hit = F.col("image_id").isNotNull()
    thumbs = _thumbnails(THUMBNAIL_SIZE)
    bench_images = F.coalesce("bench_images", F.array())

    def shown(n: int):
        return F.when(image_hit, F.lit(n)).otherwise(F.lit(0))

    own_image = F.filter(F.coalesce("train_images", F.array()), lambda i: i["image_id"] == F.col("image_id"))
    rows = joined.select(
        *hits.columns,
        "train_turns",
        "train_turn_count",
        "bench_turns",
        "bench_turn_count",
        # Text hits slice no image: Spark evaluates a Python UDF on every row, even under CASE WHEN.
        thumbs(F.transform(F.slice(own_image, 1, shown(1)), lambda i: i["bytes"])).alias("train_thumbs"),
        thumbs(F.transform(F.slice(bench_images, 1, shown(BENCH_IMAGES_SHOWN)), lambda i: i["bytes"])).alias(
            "bench_thumbs"
        ),
        F.size(bench_images).alias("bench_image_count"),
    ).collect()
    collected = [r.asDict(recursive=True) for r in rows]
    collected.sort(
        key=lambda h: (
            -(h["similarity"] if h["similarity"] is not None else float("-inf")),
            h["benchmark"],
            h["benchmark_item_id"],
            h["sample_id"],
            h["image_id"] or "",
        )
    )
    return _write(out, render_contamination_page(collected, counts, inputs.versions, config, limit))


def write_duplicate_review(
    spark: SparkSession, config: PipelineConfig, out: Path, max_clusters: int = 50, max_images: int = 12
) -> Path:
    """The `max_clusters` largest near-duplicate clusters, each a grid of up to `max_images`
    thumbnails (the representative first and marked) with the samples holding them."""
    if max_clusters < 1 or max_images < 1:
        raise ValueError(f"max_clusters and max_images must be >= 1, got {max_clusters} and {max_images}")
    inputs = _inputs(spark, config, ["near_duplicate_clusters", "silver_samples"])
    clusters, silver = inputs.frames["near_duplicate_clusters"], inputs.frames["silver_samples"]

    summary = clusters.agg(F.countDistinct("cluster_id").alias("clusters"), F.count(F.lit(1)).alias("images")).first()
    totals = summary.asDict() if summary else {"clusters": 0, "images": 0}
    if not totals["clusters"]:
        return _write(out, render_duplicate_page([], [], totals, inputs.versions, config))

    top = pinned(  # as above: cluster_id breaks ties, so a recomputation gives the same clusters
        clusters.groupBy("cluster_id")
        .agg(F.count(F.lit(1)).alias("cluster_size"))
        .orderBy(F.desc("cluster_size"), "cluster_id")
        .limit(max_clusters)
    )
    members = clusters.select("image_id", "cluster_id", "representative").join(
        F.broadcast(top.select("cluster_id")), "cluster_id"
    )
    rank = F.row_number().over(
        Window.partitionBy("cluster_id").orderBy(F.desc_nulls_last("representative"), "image_id")
    )
    members = members.withColumn("rank", rank)
    occurrences = image_occurrences(silver, "sample_id", "subset", fields=("image_id", "bytes"))
    held = occurrences.join(members.select("image_id", "cluster_id", "rank"), "image_id")
    cluster_stats = held.groupBy("cluster_id").agg(
        F.countDistinct("sample_id").alias("samples"), F.sort_array(F.collect_set("subset")).alias("subsets")
    )
    cluster_rows = [
        r.asDict(recursive=True)
        for r in top.join(cluster_stats, "cluster_id", "left").orderBy(F.desc("cluster_size"), "cluster_id").collect()
    ]

    shown = held.filter(F.col("rank") <= max_images)
    holders = shown.groupBy("image_id").agg(
        F.countDistinct("sample_id").alias("holders"),
        F.slice(F.sort_array(F.collect_set(F.struct("subset", "sample_id"))), 1, HOLDERS_SHOWN).alias("held_by"),
    )
    thumbs = _thumbnails(GRID_THUMBNAIL_SIZE)
    pictures = (
        shown.select("image_id", "bytes")
        .dropDuplicates(["image_id"])
        .select("image_id", thumbs(F.array("bytes"))[0].alias("thumb"))
    )
    image_rows = [
        r.asDict(recursive=True)
        for r in members.filter(F.col("rank") <= max_images)
        .join(holders, "image_id", "left")
        .join(pictures, "image_id", "left")
        .collect()
    ]
    return _write(out, render_duplicate_page(cluster_rows, image_rows, totals, inputs.versions, config))
