"""`finevision review`: HTML pages for a human to judge what decontamination and dedup found.

    write_contamination_review(spark, config, Path("reports/contamination.html"))
    write_duplicate_review(spark, config, Path("reports/duplicates.html"))

The contamination page puts each hit's training image beside the benchmark image, with the score
and both texts (text hits: the two texts side by side with their n-gram overlap). The duplicate
page shows the largest near-duplicate clusters as thumbnail grids.

Only the top `limit` hits (or `max_clusters` clusters of `max_images` images) are joined to the
samples, and thumbnails are made in Spark, so the driver receives a few hundred small JPEGs and
some truncated text: never the corpus. Pages are self-contained (images as data: URIs, no
scripts, no external links) and every text is HTML-escaped. Each page names the table versions it
read, for lineage.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, StringType

from etl.config import PipelineConfig
from etl.preview import _thumbnail
from etl.runs import read_pinned
from etl.schema import image_occurrences

THUMBNAIL_SIZE = 240
GRID_THUMBNAIL_SIZE = 160
TURNS_SHOWN = 2  # first turns of each sample / benchmark item
TEXT_CHARS = 400  # characters shown of each user / assistant text
BENCH_IMAGES_SHOWN = 4  # images shown of a multi-image benchmark item
HOLDERS_SHOWN = 5  # samples listed under a duplicate image

STYLE = """body{font-family:sans-serif;margin:1em;color:#222} table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:.4em;vertical-align:top;text-align:left}
.hit td.side{width:34%} .meta{font-size:90%;white-space:nowrap} .score{font-size:140%;font-weight:bold}
.user{color:#036;margin:.2em 0} .assistant{color:#060;margin:.2em 0} .more,.muted{color:#888}
img{max-width:240px;max-height:240px;display:block;margin-bottom:.3em}
.text-hit{background:#f7f7ff} .evidence td,.evidence th{padding:.1em .4em;font-size:85%} .counts td,.counts th{padding:.2em .6em}
.cluster{border:1px solid #ccc;margin:.8em 0;padding:.5em} .grid{display:flex;flex-wrap:wrap;gap:.5em}
.cell{width:170px;font-size:80%;border:2px solid transparent;padding:2px} .cell img{max-width:160px;max-height:160px}
.representative{border-color:#c60} .badge{color:#c60;font-weight:bold} code{font-size:90%}"""


def _thumbnails(size: int):
    """array<binary> -> array<string> of <img> tags (or a note for unreadable bytes), on executors."""

    def thumbs(images):
        return [_thumbnail(data, size) if data is not None else "<em>no image bytes</em>" for data in images or []]

    return F.udf(thumbs, ArrayType(StringType()))


def _first_turns(column: str):
    """The first turns, each text cut to TEXT_CHARS + 1 characters (so the page knows it was cut)."""
    return F.transform(
        F.slice(F.coalesce(F.col(column), F.array()), 1, TURNS_SHOWN),
        lambda t: F.struct(
            F.substring(t["user"], 1, TEXT_CHARS + 1).alias("user"),
            F.substring(t["assistant"], 1, TEXT_CHARS + 1).alias("assistant"),
        ),
    )


# ---- rendering (pure Python on collected rows) ----------------------------------------------


def _e(value) -> str:
    return html.escape("" if value is None else str(value))


def _cut(text: str | None) -> str:
    if text is None:
        return ""
    return _e(text[:TEXT_CHARS]) + ("&hellip;" if len(text) > TEXT_CHARS else "")


def _turns_html(turns, total: int | None) -> str:
    if not turns:
        return '<p class="muted">(no text)</p>'
    parts = []
    for turn in turns:
        if turn["user"]:
            parts.append(f'<p class="user">Q: {_cut(turn["user"])}</p>')
        if turn["assistant"]:
            parts.append(f'<p class="assistant">A: {_cut(turn["assistant"])}</p>')
    if total and total > len(turns):
        parts.append(f'<p class="more">(+{total - len(turns)} more turn(s))</p>')
    return "".join(parts)


def _versions_html(versions: dict[str, int], config: PipelineConfig) -> str:
    read = ", ".join(f"<code>{_e(name)}</code> v{version}" for name, version in versions.items())
    return f"<p>Tables read: {read} (lakehouse <code>{_e(config.catalog or config.lakehouse)}</code>).</p>"


def _page(title: str, body: str) -> str:
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{_e(title)}</title>'
        f"<style>{STYLE}</style></head><body>{body}</body></html>"
    )


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
}


def _evidence_html(evidence: dict | None) -> str:
    """The verified method's evidence: each feature, then the rule's score against its decision."""
    if not evidence:
        return ""

    def value(v) -> str:
        return "&mdash;" if v is None else (f"{v:.0f}" if v > 1.5 else f"{v:.3f}")

    rows = "".join(
        f"<tr><td>{_e(label)}</td><td>{value(evidence.get(name))}</td></tr>" for name, label in EVIDENCE_LABELS.items()
    )
    verdict = (
        f"<tr><th>rule score</th><th>{value(evidence.get('score'))} (&ge; {value(evidence.get('decision'))})</th></tr>"
    )
    return f'<table class="evidence">{rows}{verdict}</table>'


def _hit_row(hit: dict) -> str:
    training, benchmark = hit.get("train_turns"), hit.get("bench_turns")
    text_hit = hit["image_id"] is None
    if text_hit:
        score = (
            f'<div class="score">{hit["similarity"]:.3f}</div>'
            f"<div>overlap: {hit['similarity']:.0%} of the benchmark text's n-grams found in the sample</div>"
        )
        left = _turns_html(training, hit.get("train_turn_count"))
        right = _turns_html(benchmark, hit.get("bench_turn_count"))
    else:
        score = f'<div class="score">{hit["similarity"]:.3f}</div><div>cosine similarity</div>'
        train_images = "".join(hit.get("train_thumbs") or []) or '<em class="muted">image not in silver_samples</em>'
        bench_images = "".join(hit.get("bench_thumbs") or []) or '<em class="muted">no benchmark image</em>'
        more = (hit.get("bench_image_count") or 0) - len(hit.get("bench_thumbs") or [])
        if more > 0:
            bench_images += f'<p class="more">(+{more} more image(s))</p>'
        left = train_images + _turns_html(training, hit.get("train_turn_count"))
        right = bench_images + _turns_html(benchmark, hit.get("bench_turn_count"))
    threshold = "&mdash;" if hit["threshold"] is None else f"{hit['threshold']:.3f}"
    meta = (
        f"{score}{_evidence_html(hit.get('evidence'))}<div>method <code>{_e(hit['method'])}</code></div><div>model <code>{_e(hit['model_id'])}</code></div>"
        f"<div>threshold {threshold}</div><hr><div>subset <b>{_e(hit['subset'])}</b></div>"
        f"<div>sample <code>{_e(hit['sample_id'])}</code></div>"
        + (f"<div>image <code>{_e(hit['image_id'][:16])}&hellip;</code></div>" if not text_hit else "")
        + f"<hr><div>benchmark <b>{_e(hit['benchmark'])}</b></div><div>item <code>{_e(hit['benchmark_item_id'])}</code></div>"
        f'<div class="muted">run {_e(hit["run_id"])}</div>'
    )
    kind = "text-hit" if text_hit else "image-hit"
    return f'<tr class="hit {kind}"><td class="side">{left}</td><td class="side">{right}</td><td class="meta">{meta}</td></tr>'


def render_contamination_page(
    hits: list[dict], counts: list[dict], versions: dict[str, int], config: PipelineConfig, limit: int
) -> str:
    """The page from collected rows: `hits` (top hits, best first, with thumbnails and turns) and
    `counts` (benchmark, method, hits, samples over the whole table)."""
    total = sum(c["hits"] for c in counts)
    body = [f"<h1>Contamination review</h1>{_versions_html(versions, config)}"]
    if total == 0:
        body.append("<p><b>No hits</b>: contamination_hits is empty.</p>")
        return _page("contamination review", "".join(body))
    rows = "".join(
        f"<tr><td>{_e(c['benchmark'])}</td><td><code>{_e(c['method'])}</code></td><td>{c['hits']}</td><td>{c['samples']}</td></tr>"
        for c in counts
    )
    body.append(
        f'<table class="counts"><tr><th>benchmark</th><th>method</th><th>hits</th><th>training samples</th></tr>{rows}'
        f"<tr><th colspan=2>all</th><th>{total}</th><th></th></tr></table>"
        f"<p>Showing the top {len(hits)} of {total} hit(s) by similarity (limit {limit}).</p>"
        "<table><tr><th>training sample</th><th>benchmark item</th><th>score</th></tr>"
        + "".join(_hit_row(hit) for hit in hits)
        + "</table>"
    )
    return _page("contamination review", "".join(body))


def _cluster_html(cluster: dict, images: list[dict]) -> str:
    cells = []
    for image in images:
        representative = bool(image["representative"])
        thumbnail = image.get("thumb") or '<em class="muted">image not in silver_samples</em>'
        holders = "<br>".join(
            f"{_e(h['subset'])} <code>{_e(h['sample_id'])}</code>" for h in image.get("held_by") or []
        )
        more = (image.get("holders") or 0) - len(image.get("held_by") or [])
        if more > 0:
            holders += f'<br><span class="more">(+{more} more sample(s))</span>'
        badge = '<div class="badge">&#9733; representative</div>' if representative else ""
        cls = "cell representative" if representative else "cell"
        cells.append(
            f'<div class="{cls}">{thumbnail}{badge}<div><code>{_e(image["image_id"][:16])}&hellip;</code></div>{holders}</div>'
        )
    shown = f" (showing {len(images)})" if len(images) < cluster["cluster_size"] else ""
    subsets = ", ".join(_e(s) for s in cluster.get("subsets") or [])
    return (
        f'<div class="cluster"><h2>cluster <code>{_e(cluster["cluster_id"][:16])}&hellip;</code>: '
        f"{cluster['cluster_size']} images{shown}</h2>"
        f"<p>held by {cluster.get('samples') or 0} sample(s) in subset(s): {subsets or '&mdash;'}</p>"
        f'<div class="grid">{"".join(cells)}</div></div>'
    )


def render_duplicate_page(
    clusters: list[dict], images: list[dict], totals: dict, versions: dict[str, int], config: PipelineConfig
) -> str:
    """The page from collected rows: `clusters` (largest first), `images` (cluster_id, rank, ...)."""
    body = [f"<h1>Near-duplicate review</h1>{_versions_html(versions, config)}"]
    if not totals.get("clusters"):
        body.append("<p><b>No near-duplicate clusters</b>: near_duplicate_clusters is empty.</p>")
        return _page("near-duplicate review", "".join(body))
    body.append(
        f"<p>{totals['clusters']} cluster(s) holding {totals['images']} image(s); "
        f"showing the {len(clusters)} largest.</p>"
    )
    by_cluster: dict[str, list[dict]] = {}
    for image in sorted(images, key=lambda i: i["rank"]):
        by_cluster.setdefault(image["cluster_id"], []).append(image)
    body += [_cluster_html(cluster, by_cluster.get(cluster["cluster_id"], [])) for cluster in clusters]
    return _page("near-duplicate review", "".join(body))


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
    top = hits.orderBy(*order).limit(limit).localCheckpoint()  # one pinned set of rows for both joins
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

    top = (
        clusters.groupBy("cluster_id")
        .agg(F.count(F.lit(1)).alias("cluster_size"))
        .orderBy(F.desc("cluster_size"), "cluster_id")
        .limit(max_clusters)
        .localCheckpoint()
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
