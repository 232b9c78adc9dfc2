"""`finevision report`: one static HTML report of a curated corpus, readable offline.

    path = write_report(spark, config, Path("reports/report"))   # reports/report/index.html

The report reads the analytics tables that `finevision analyze` wrote (subset_stats,
diversity_metrics), turn_ratings when it exists, and pipeline_runs for lineage: all of them small
(one row per subset, category, axis and score), so they are collected. Contamination pairs and
near-duplicate clusters come from `etl.review`, written next to the report and embedded as frames.
Rendered from etl/templates/report.html; charts are inline SVG; the folder has no scripts and no
external links.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from markupsafe import Markup
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from etl import tables
from etl.config import PipelineConfig
from etl.pages import DASH, decimal, percent, render, thousands
from etl.reference import CATEGORY_SHARES, DIVERSITY, RATING_SHARES, TOTALS
from etl.review import write_contamination_review, write_duplicate_review
from etl.runs import read_pinned
from etl.schema import CATEGORIES, RATING_AXES
from etl.stages.corpus_stats import rating_distribution

CONTAMINATION_FRAME = "review_contamination.html"
DUPLICATES_FRAME = "review_duplicates.html"
REVIEW_LIMIT = 50

OURS, THEIRS = "#2f6db3", "#e0a030"


@dataclass
class ReportData:
    totals: dict
    categories: list[dict]
    subsets: list[dict]
    diversity: list[dict]
    ratings: list[dict] | None  # (axis, score, turns, share); None when turn_ratings does not exist
    versions: dict[str, int]
    analyze_run: dict | None
    lakehouse: str
    frames: dict[str, str] = field(default_factory=dict)  # section -> file name next to the report


# ---- charts: geometry here, drawn as inline SVG by the `chart` macro of templates/report.html ----


@dataclass(frozen=True)
class BarChart:
    width: int
    height: int
    series: list[tuple[str, str]]  # (name, colour)
    labels: list[dict]  # x, y, text: one per row, right-aligned before the bars
    bars: list[dict]  # x, y, width, height, fill, title, text_x, text_y, text
    references: list[dict]  # x, bottom, text_y, text: dashed vertical lines


def bar_chart(
    rows: list[tuple[str, list[float | None]]],
    series: list[tuple[str, str]],
    unit: str = "%",
    scale: float = 100.0,
    width: int = 760,
    reference: list[tuple[str, float]] | None = None,
) -> BarChart:
    """Horizontal grouped bars: rows of (label, [value per series]); series of (name, colour)."""
    label_w, bar_h, gap = 210, 13, 8
    group_h = bar_h * len(series) + gap
    plot_w = width - label_w - 70
    values = [v for _, vs in rows for v in vs if v is not None] + [v for _, v in reference or []]
    top = max(values + [1e-9])
    height = group_h * len(rows) + 30
    labels, bars = [], []
    for i, (label, vs) in enumerate(rows):
        y = 10 + i * group_h
        labels.append({"x": label_w - 6, "y": y + bar_h, "text": label})
        for j, value in enumerate(vs):
            if value is None:
                continue
            w = plot_w * value / top
            yy = y + j * bar_h
            bars.append(
                {
                    "x": label_w,
                    "y": yy,
                    "width": w,
                    "height": bar_h - 2,
                    "fill": series[j][1],
                    "title": f"{label} {series[j][0]}: {value * scale:.2f}{unit}",
                    "text_x": label_w + w + 4,
                    "text_y": yy + bar_h - 3,
                    "text": f"{value * scale:.1f}{unit}",
                }
            )
    references = [
        {
            "x": label_w + plot_w * value / top,
            "bottom": height - 18,
            "text_y": height - 4,
            "text": f"{name} {value * scale:.3g}",
        }
        for name, value in reference or []
    ]
    return BarChart(width, height, series, labels, bars, references)


def _category_chart(data: ReportData) -> BarChart:
    ours = {c["name"]: c for c in data.categories}
    rows: list[tuple[str, list[float | None]]] = []
    for category in CATEGORIES:
        c = ours.get(category, {})
        fv = CATEGORY_SHARES[category]
        rows.append(
            (category, [c.get("sample_share") or 0.0, fv[0] / 100, c.get("answer_token_share") or 0.0, fv[1] / 100])
        )
    series = [
        ("samples (this corpus)", OURS),
        ("samples (FineVision)", THEIRS),
        ("answer tokens (this corpus)", "#7fa7d6"),
        ("answer tokens (FineVision)", "#f0cc88"),
    ]
    return bar_chart(rows, series)


def _rating_charts(data: ReportData) -> list[tuple[str, int, BarChart]]:
    """(axis name, rated turns, chart of this corpus's score shares beside FineVision's) per axis."""
    if data.ratings is None:
        return []
    shares = {(r["axis"], r["score"]): r["share"] for r in data.ratings}
    charts = []
    for axis in RATING_AXES:
        turns = sum(r["turns"] for r in data.ratings if r["axis"] == axis)
        rows: list[tuple[str, list[float | None]]] = [
            (f"score {s}", [shares.get((axis, s), 0.0), RATING_SHARES[axis][s - 1] / 100]) for s in range(1, 6)
        ]
        chart = bar_chart(rows, [("this corpus", OURS), ("FineVision", THEIRS)], width=560)
        charts.append((axis.replace("_", " "), turns, chart))
    return charts


def _diversity_chart(data: ReportData) -> BarChart:
    rows: list[tuple[str, list[float | None]]] = [
        (f"{d['name']} ({d['images']} img)", [d["diversity_score"]]) for d in data.diversity if d["level"] == "subset"
    ]
    rows += [(f"all ({d['images']} img)", [d["diversity_score"]]) for d in data.diversity if d["level"] == "total"]
    reference = [("FineVision", DIVERSITY["FineVision"][2]), ("Cauldron", DIVERSITY["The Cauldron"][2])]
    return bar_chart(rows, [("diversity score", OURS)], unit="", scale=1.0, reference=reference)


# ---- the per-subset table ----------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    title: str
    cell: Callable[[dict], Any]  # the row's value, formatted
    css: str = ""


def _formatted(key: str, format_value: Callable[[Any], Any]) -> Callable[[dict], Any]:
    return lambda row: format_value(row.get(key))


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _longest_sides(row: dict) -> Any:
    sides = [row.get(f"side_p{q}") for q in (10, 50, 90)]
    return Markup(" / ").join(thousands(s) for s in sides) if any(s is not None for s in sides) else DASH


SUBSET_COLUMNS = [
    Column("subset", _formatted("name", _text), "l"),
    Column("category", _formatted("category", _text), "l"),
    *[
        Column(title, _formatted(key, thousands))
        for title, key in [
            ("samples", "samples"),
            ("images", "images"),
            ("turns", "turns"),
            ("question tokens", "question_tokens"),
            ("answer tokens", "answer_tokens"),
        ]
    ],
    Column("% samples", _formatted("sample_share", percent)),
    Column("images / sample", _formatted("images_per_sample", decimal)),
    Column("longest side p10 / p50 / p90", _longest_sides),
    Column("exact dup.", _formatted("exact_duplicate_share", percent)),
    Column("near dup.", _formatted("near_duplicate_share", percent)),
    Column("contam. samples", _formatted("contaminated_sample_rate", lambda v: percent(v, 2))),
    Column("contam. images", _formatted("contaminated_image_rate", lambda v: percent(v, 2))),
    *[Column(axis.replace("_", " "), _formatted(f"rating_{axis}", decimal)) for axis in RATING_AXES],
]


def _headline_cards(data: ReportData) -> list[tuple[str, Any, str]]:
    t = data.totals
    overall = next((d for d in data.diversity if d["level"] == "total"), None)
    return [
        ("samples", thousands(t.get("samples")), f"FineVision {TOTALS['samples']:,}"),
        ("images", thousands(t.get("images")), f"FineVision {TOTALS['images']:,}"),
        ("turns", thousands(t.get("turns")), f"FineVision {TOTALS['turns']:,}"),
        ("question tokens", thousands(t.get("question_tokens")), "FineVision 3.17B"),
        ("answer tokens", thousands(t.get("answer_tokens")), "FineVision 9.46B"),
        ("subsets", thousands(len(data.subsets)), "FineVision 185"),
        ("contaminated samples", percent(t.get("contaminated_sample_rate"), 2), "FineVision 1.02%"),
        ("contaminated images", percent(t.get("contaminated_image_rate"), 2), ""),
        ("exact-duplicate samples", percent(t.get("exact_duplicate_share")), ""),
        ("near-duplicate samples", percent(t.get("near_duplicate_share")), ""),
        ("diversity score", decimal(overall["diversity_score"], 3) if overall else DASH, "FineVision 0.500"),
    ]


def render_report(data: ReportData) -> str:
    """The report page (templates/report.html) from collected data."""
    subset_rows = sorted(data.subsets, key=lambda r: (r["category"] or "", r["name"]))
    summary_rows = [dict(c, category="(category)") for c in data.categories]
    summary_rows.append(dict(data.totals, name="all subsets", category=""))
    return render(
        "report.html",
        title="FineVision ETL report",
        cards=_headline_cards(data),
        category_chart=_category_chart(data),
        columns=SUBSET_COLUMNS,
        subset_rows=subset_rows,
        summary_rows=summary_rows,
        frames=data.frames,
        ratings=data.ratings,
        rating_charts=_rating_charts(data),
        diversity=data.diversity,
        diversity_chart=_diversity_chart(data) if data.diversity else None,
        published_diversity=DIVERSITY,
        analyze_run=data.analyze_run,
        versions=data.versions,
        lakehouse=data.lakehouse,
    )


# ---- Spark side ------------------------------------------------------------------------------


def collect_report_data(spark: SparkSession, config: PipelineConfig) -> ReportData:
    versions: dict[str, int] = {}
    stats = read_pinned(spark, config, "subset_stats", versions)
    rows = [r.asDict() for r in stats.collect()]
    diversity = read_pinned(spark, config, "diversity_metrics", versions, required=False)
    ratings = read_pinned(spark, config, "turn_ratings", versions, required=False)
    runs = read_pinned(spark, config, "pipeline_runs", versions, required=False)
    analyze = None
    if runs is not None:
        last = (
            runs.filter((F.col("stage") == "analyze") & (F.col("status") == "succeeded"))
            .orderBy(F.desc("ended_at"))
            .first()
        )
        analyze = last.asDict(recursive=True) if last else None
    return ReportData(
        totals=next((r for r in rows if r["level"] == "total"), {}),
        categories=sorted((r for r in rows if r["level"] == "category"), key=lambda r: r["name"]),
        subsets=[r for r in rows if r["level"] == "subset"],
        diversity=[r.asDict() for r in diversity.collect()] if diversity is not None else [],
        ratings=[r.asDict() for r in rating_distribution(ratings).collect()] if ratings is not None else None,
        versions=versions,
        analyze_run=analyze,
        lakehouse=config.catalog or config.lakehouse,
    )


def write_report(spark: SparkSession, config: PipelineConfig, out_dir: Path) -> Path:
    """Write out_dir/index.html (and the two review pages it embeds); returns the index path."""
    data = collect_report_data(spark, config)
    out_dir.mkdir(parents=True, exist_ok=True)
    reviews: list[tuple[str, tuple[str, ...], str, Callable[..., Any]]] = [
        (
            "contamination",
            ("contamination_hits", "silver_samples", "benchmark_items"),
            CONTAMINATION_FRAME,
            write_contamination_review,
        ),
        ("duplicates", ("near_duplicate_clusters", "silver_samples"), DUPLICATES_FRAME, write_duplicate_review),
    ]
    for section, needs, file, writer in reviews:
        if all(tables.exists(spark, tables.TableRef.of(config, table)) for table in needs):
            writer(spark, config, out_dir / file, REVIEW_LIMIT)
            data.frames[section] = file
    index = out_dir / "index.html"
    index.write_text(render_report(data), encoding="utf-8")
    return index
