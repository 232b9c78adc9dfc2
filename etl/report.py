"""`finevision report`: one static HTML report of a curated corpus, readable offline.

    path = write_report(spark, config, Path("reports/report"))   # reports/report/index.html

The report reads the analytics tables that `finevision analyze` wrote (subset_stats,
diversity_metrics), turn_ratings when it exists, and pipeline_runs for lineage: all of them small
(one row per subset, category, axis and score), so they are collected. Contamination pairs and
near-duplicate clusters come from `etl.review`, written next to the report and embedded as frames.
Charts are inline SVG; the folder has no scripts and no external links.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from etl import tables
from etl.config import PipelineConfig
from etl.reference import CATEGORY_SHARES, DIVERSITY, RATING_SHARES, TOTALS
from etl.review import write_contamination_review, write_duplicate_review
from etl.runs import read_pinned
from etl.schema import CATEGORIES, RATING_AXES
from etl.stages.corpus_stats import rating_distribution

CONTAMINATION_FRAME = "review_contamination.html"
DUPLICATES_FRAME = "review_duplicates.html"
REVIEW_LIMIT = 50

STYLE = """body{font-family:sans-serif;margin:1.5em;color:#222;max-width:1300px}
h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:1.6em} table{border-collapse:collapse;font-size:90%}
td,th{border:1px solid #ccc;padding:.3em .5em;text-align:right} td.l,th.l{text-align:left}
.cards{display:flex;flex-wrap:wrap;gap:.8em} .card{border:1px solid #ccc;border-radius:6px;padding:.6em 1em;min-width:150px}
.card .v{font-size:170%;font-weight:bold} .card .k{color:#555} .card .ref{color:#888;font-size:85%}
.muted{color:#888} iframe{width:100%;height:600px;border:1px solid #ccc} svg text{font-size:12px}
.legend span{display:inline-block;width:12px;height:12px;margin:0 .3em 0 1em;vertical-align:middle}"""
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


def _e(value) -> str:
    return html.escape("" if value is None else str(value))


def _int(value) -> str:
    return "&mdash;" if value is None else f"{int(value):,}"


def _pct(value, digits: int = 1) -> str:
    return "&mdash;" if value is None else f"{100 * value:.{digits}f}%"


def _num(value, digits: int = 2) -> str:
    return "&mdash;" if value is None else f"{value:.{digits}f}"


# ---- charts (inline SVG) ---------------------------------------------------------------------


def bar_chart(
    rows: list[tuple[str, list[float]]],
    series: list[tuple[str, str]],
    unit: str = "%",
    scale: float = 100.0,
    width: int = 760,
    reference: list[tuple[str, float]] | None = None,
) -> str:
    """Horizontal grouped bars: rows of (label, [value per series]); series of (name, colour)."""
    label_w, bar_h, gap = 210, 13, 8
    group_h = bar_h * len(series) + gap
    plot_w = width - label_w - 70
    values = [v for _, vs in rows for v in vs if v is not None] + [v for _, v in reference or []]
    top = max(values + [1e-9])
    height = group_h * len(rows) + 30
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">']
    for i, (label, vs) in enumerate(rows):
        y = 10 + i * group_h
        parts.append(f'<text x="{label_w - 6}" y="{y + bar_h}" text-anchor="end">{_e(label)}</text>')
        for j, value in enumerate(vs):
            if value is None:
                continue
            w = plot_w * value / top
            yy = y + j * bar_h
            parts.append(
                f'<rect class="bar" x="{label_w}" y="{yy}" width="{w:.1f}" height="{bar_h - 2}" fill="{series[j][1]}">'
                f"<title>{_e(label)} {_e(series[j][0])}: {value * scale:.2f}{unit}</title></rect>"
                f'<text x="{label_w + w + 4:.1f}" y="{yy + bar_h - 3}">{value * scale:.1f}{unit}</text>'
            )
    for name, value in reference or []:
        x = label_w + plot_w * value / top
        parts.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="4" y2="{height - 18}" stroke="#c33" stroke-dasharray="4 3"/>'
            f'<text x="{x:.1f}" y="{height - 4}" text-anchor="middle" fill="#c33">{_e(name)} {value * scale:.3g}</text>'
        )
    parts.append("</svg>")
    legend = "".join(f'<span style="background:{colour}"></span>{_e(name)}' for name, colour in series)
    return f'<div class="legend">{legend}</div>' + "".join(parts)


# ---- sections --------------------------------------------------------------------------------


def _card(key: str, value: str, ref: str = "") -> str:
    return f'<div class="card"><div class="k">{key}</div><div class="v">{value}</div><div class="ref">{ref}</div></div>'


def _headline(data: ReportData) -> str:
    t = data.totals
    overall = next((d for d in data.diversity if d["level"] == "total"), None)
    cards = [
        _card("samples", _int(t.get("samples")), f"FineVision {TOTALS['samples']:,}"),
        _card("images", _int(t.get("images")), f"FineVision {TOTALS['images']:,}"),
        _card("turns", _int(t.get("turns")), f"FineVision {TOTALS['turns']:,}"),
        _card("question tokens", _int(t.get("question_tokens")), "FineVision 3.17B"),
        _card("answer tokens", _int(t.get("answer_tokens")), "FineVision 9.46B"),
        _card("subsets", _int(len(data.subsets)), "FineVision 185"),
        _card("contaminated samples", _pct(t.get("contaminated_sample_rate"), 2), "FineVision 1.02%"),
        _card("contaminated images", _pct(t.get("contaminated_image_rate"), 2)),
        _card("exact-duplicate samples", _pct(t.get("exact_duplicate_share"))),
        _card("near-duplicate samples", _pct(t.get("near_duplicate_share"))),
        _card("diversity score", _num(overall["diversity_score"], 3) if overall else "&mdash;", "FineVision 0.500"),
    ]
    return '<h2 id="headline">Headline numbers</h2><div class="cards">' + "".join(cards) + "</div>"


def _categories(data: ReportData) -> str:
    ours = {c["name"]: c for c in data.categories}
    rows = []
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
    return '<h2 id="categories">Category shares</h2>' + bar_chart(rows, series)


# (header, column, css class, formatter); the longest-side column is built from three columns
_SUBSET_COLUMNS: list[tuple[str, str | None, str, Callable[[Any], str]]] = [
    ("subset", "name", "l", _e),
    ("category", "category", "l", _e),
    ("samples", "samples", "", _int),
    ("images", "images", "", _int),
    ("turns", "turns", "", _int),
    ("question tokens", "question_tokens", "", _int),
    ("answer tokens", "answer_tokens", "", _int),
    ("% samples", "sample_share", "", _pct),
    ("images / sample", "images_per_sample", "", _num),
    ("longest side p10 / p50 / p90", None, "", _e),
    ("exact dup.", "exact_duplicate_share", "", _pct),
    ("near dup.", "near_duplicate_share", "", _pct),
    ("contam. samples", "contaminated_sample_rate", "", lambda v: _pct(v, 2)),
    ("contam. images", "contaminated_image_rate", "", lambda v: _pct(v, 2)),
    *[(axis.replace("_", " "), f"rating_{axis}", "", _num) for axis in RATING_AXES],
]


def _stats_row(row: dict, bold: bool = False) -> str:
    cells = []
    for _, key, cls, fmt in _SUBSET_COLUMNS:
        if key is None:
            sides = [row.get(f"side_p{q}") for q in (10, 50, 90)]
            value = " / ".join(_int(s) for s in sides) if any(s is not None for s in sides) else "&mdash;"
        else:
            value = fmt(row.get(key))
        cells.append(f'<td class="{cls}">{"<b>" + value + "</b>" if bold else value}</td>')
    return "<tr>" + "".join(cells) + "</tr>"


def _subset_table(data: ReportData) -> str:
    head = "".join(f'<th class="{cls}">{_e(title)}</th>' for title, _, cls, _ in _SUBSET_COLUMNS)
    body = "".join(_stats_row(r) for r in sorted(data.subsets, key=lambda r: (r["category"] or "", r["name"])))
    body += "".join(_stats_row(dict(c, category="(category)"), bold=True) for c in data.categories)
    body += _stats_row(dict(data.totals, name="all subsets", category=""), bold=True)
    note = "" if data.ratings is not None else '<p class="muted">Rating columns: no ratings yet.</p>'
    return f'<h2 id="subsets">Per-subset table</h2><table id="subset-table"><tr>{head}</tr>{body}</table>{note}'


def _frame_section(anchor: str, title: str, file: str | None, missing: str) -> str:
    if not file:
        return f'<h2 id="{anchor}">{title}</h2><p class="muted">{missing}</p>'
    return (
        f'<h2 id="{anchor}">{title}</h2><p><a href="{_e(file)}">Open the full page</a></p>'
        f'<iframe src="{_e(file)}" title="{_e(title)}"></iframe>'
    )


def _ratings(data: ReportData) -> str:
    title = '<h2 id="ratings">Rating distributions</h2>'
    if data.ratings is None:
        return title + '<p id="no-ratings">No ratings yet: the table <code>turn_ratings</code> does not exist.</p>'
    shares = {(r["axis"], r["score"]): r["share"] for r in data.ratings}
    charts = []
    for axis in RATING_AXES:
        turns = sum(r["turns"] for r in data.ratings if r["axis"] == axis)
        rows = [(f"score {s}", [shares.get((axis, s), 0.0), RATING_SHARES[axis][s - 1] / 100]) for s in range(1, 6)]
        charts.append(
            f'<h3>{_e(axis.replace("_", " "))} <span class="muted">({turns:,} rated turns)</span></h3>'
            + bar_chart(rows, [("this corpus", OURS), ("FineVision", THEIRS)], width=560)
        )
    return title + "".join(charts)


def _diversity(data: ReportData) -> str:
    title = '<h2 id="diversity">Diversity</h2>'
    if not data.diversity:
        return title + '<p class="muted">No diversity_metrics yet (needs image_embeddings).</p>'
    rows = [
        (f"{d['name']} ({d['images']} img)", [d["diversity_score"]]) for d in data.diversity if d["level"] == "subset"
    ]
    rows += [(f"all ({d['images']} img)", [d["diversity_score"]]) for d in data.diversity if d["level"] == "total"]
    reference = [("FineVision", DIVERSITY["FineVision"][2]), ("Cauldron", DIVERSITY["The Cauldron"][2])]
    table = "".join(
        f'<tr><td class="l">{_e(d["level"])}</td><td class="l">{_e(d["name"])}</td><td>{_int(d["images"])}</td>'
        f"<td>{_num(d['effective_rank'])}</td><td>{_num(d['participation_ratio'])}</td><td>{_num(d['diversity_score'], 3)}</td></tr>"
        for d in data.diversity
    )
    published = "".join(
        f'<tr><td class="l">published</td><td class="l">{_e(name)}</td><td></td><td>{er}</td><td>{pr}</td><td>{score:.3f}</td></tr>'
        for name, (er, pr, score) in DIVERSITY.items()
    )
    return (
        title
        + "<p>diversity = sqrt(effective rank / 512 &middot; participation ratio / 512) of the SSCD embeddings' covariance; "
        "small subsets cannot reach a high rank (at most images &minus; 1).</p>"
        + bar_chart(rows, [("diversity score", OURS)], unit="", scale=1.0, reference=reference)
        + '<table><tr><th class="l">level</th><th class="l">name</th><th>images</th><th>effective rank</th>'
        f"<th>participation ratio</th><th>diversity</th></tr>{table}{published}</table>"
    )


def _lineage(data: ReportData) -> str:
    versions = "".join(
        f'<tr><td class="l"><code>{_e(n)}</code></td><td>{v}</td></tr>' for n, v in sorted(data.versions.items())
    )
    run = data.analyze_run
    if run:
        run_html = (
            f"<p>Analytics written by run <code>{_e(run['run_id'])}</code> (stage analyze, {_e(run['ended_at'])}), "
            f"MLflow run <code>{_e(run['mlflow_run_id'] or 'none')}</code>, git <code>{_e(run['git_revision'])}</code>, "
            f"config <code>{_e(run['config_hash'])}</code>.</p>"
            "<p>Inputs read by that run: "
            + ", ".join(f"<code>{_e(k)}</code> v{v}" for k, v in sorted((run["input_versions"] or {}).items()))
            + "</p>"
        )
    else:
        run_html = '<p class="muted">No analyze run in pipeline_runs.</p>'
    return (
        f'<h2 id="lineage">Lineage</h2>{run_html}<p>Tables read by this report (lakehouse <code>{_e(data.lakehouse)}</code>):</p>'
        f'<table><tr><th class="l">table</th><th>version</th></tr>{versions}</table>'
    )


def render_report(data: ReportData) -> str:
    sections = [
        _headline(data),
        _categories(data),
        _subset_table(data),
        _frame_section(
            "contamination",
            "Contamination pairs",
            data.frames.get("contamination"),
            "Not available: contamination_hits, silver_samples or benchmark_items is not written yet.",
        ),
        _frame_section(
            "duplicates",
            "Near-duplicate clusters",
            data.frames.get("duplicates"),
            "Not available: near_duplicate_clusters or silver_samples is not written yet.",
        ),
        _ratings(data),
        _diversity(data),
        _lineage(data),
    ]
    nav = " &middot; ".join(
        f'<a href="#{a}">{t}</a>'
        for a, t in [
            ("headline", "headline"),
            ("categories", "categories"),
            ("subsets", "subsets"),
            ("contamination", "contamination"),
            ("duplicates", "duplicates"),
            ("ratings", "ratings"),
            ("diversity", "diversity"),
            ("lineage", "lineage"),
        ]
    )
    return (
        '<!doctype html><html><head><meta charset="utf-8"><title>FineVision ETL report</title>'
        f"<style>{STYLE}</style></head><body><h1>FineVision ETL report</h1><p>{nav}</p>"
        + "".join(sections)
        + "</body></html>"
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
