"""Rendered charts (matplotlib, Agg) with questions derived from the data they plot.

`charts` is a training subset in the FineVision parquet layout (`images` list of
struct<bytes, path>, `texts` list of struct<user, assistant>, plus an `id` column);
`chartqa_local` is a small benchmark in the plain column layout (`image`, `question`, `answer`,
`item_id`), drawn from other themes so only the injected copies are true matches.
"""

from __future__ import annotations

import io
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from etl.samples.corpus import Corpus, decompression_bomb_png, insert_at_random, ref, transform_copy

TRAIN_CHARTS = 120  # per unit of scale
BENCH_ITEMS = 20
ROWS_PER_FILE = 64
# (transformation, chart kind of the benchmark item, must_find). Measured with the int8 sscd.onnx
# over 60 benchmark-style charts: near-lossless edits of line and pie charts keep cosine >= 0.97
# (jpeg444_q100 >= 0.99, upscale_2 >= 0.99, jpeg444_q98 >= 0.975), but flat bar charts drop to
# 0.93 under the same edits and to 0.6-0.9 under brightness or ordinary JPEG: the last copy is
# recall material, not a hit a 0.95 threshold must produce.
INJECTED = (
    ("recompress", "bar", True),
    ("jpeg444_q100", "line", True),
    ("upscale_2", "pie", True),
    ("jpeg444_q98", "line", True),
    ("brightness_0.9+jpeg_q85", "barh", False),
)
KINDS = ("bar", "barh", "line", "pie")
BOMB_SIDE = 16_384  # 268M pixels: over clean.max_pixels (178,956,970, also where PIL's open refuses)

IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
TURN_STRUCT = pa.struct([("user", pa.string()), ("assistant", pa.string())])

# (title, noun for one category, categories, unit)
TRAIN_THEMES = [
    (
        "Fruit sold at the market stall",
        "fruit",
        ["Apples", "Bananas", "Cherries", "Grapes", "Mangoes", "Oranges", "Pears", "Plums"],
        "kg",
    ),
    (
        "Books borrowed by genre",
        "genre",
        ["Fantasy", "History", "Mystery", "Poetry", "Romance", "Science", "Travel"],
        "loans",
    ),
    (
        "Energy use by appliance",
        "appliance",
        ["Dryer", "Fridge", "Heater", "Kettle", "Oven", "Television", "Washer"],
        "kWh",
    ),
    ("Visitors per museum wing", "wing", ["Egyptian", "Modern", "Natural", "Roman", "Textiles", "Asian"], "visitors"),
    ("Bike trips by station", "station", ["Harbour", "Market", "Park", "Station", "University", "Zoo"], "trips"),
]
TRAIN_METRICS = [
    ("Average rainfall", "mm"),
    ("Café revenue", "k$"),
    ("Website signups", "signups"),
    ("Solar output", "MWh"),
]
BENCH_THEMES = [
    ("Medals won by country", "country", ["Brazil", "Canada", "Japan", "Kenya", "Norway", "Spain"], "medals"),
    ("Goals scored per team", "team", ["Falcons", "Lions", "Otters", "Rovers", "Tigers", "Wolves"], "goals"),
    ("Trees planted by district", "district", ["East", "Hillside", "North", "Riverside", "South", "West"], "trees"),
]
BENCH_METRICS = [("Ferry passengers", "thousands"), ("Library members", "members")]
MARGINS = {
    "bar": {"left": 0.14, "right": 0.97, "top": 0.9, "bottom": 0.2},
    "barh": {"left": 0.22, "right": 0.95, "top": 0.9, "bottom": 0.14},
    "line": {"left": 0.14, "right": 0.97, "top": 0.9, "bottom": 0.1},
    "pie": {"left": 0.05, "right": 0.95, "top": 0.88, "bottom": 0.04},
}
COLORS = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C"]


def specs(prefix: str) -> list[dict[str, Any]]:
    return [
        {
            "name": "charts",
            "format": "hf_parquet",
            "location": f"{prefix}/charts",
            "subset": "charts",
            "category": "Chart & Table",
            "fields": {"id": "id"},
            "options": {"layout": "finevision"},
        },
        {
            "name": "chartqa_local",
            "format": "hf_parquet",
            "location": f"{prefix}/chartqa_local/test.parquet",
            "subset": "chartqa_local",
            "category": "Chart & Table",
            "benchmark": "chartqa_local",
            "fields": {"id": "item_id", "image": "image", "question": "question", "answer": "answer"},
            "options": {"layout": "columns"},
        },
    ]


def _distinct_values(rng: np.random.Generator, n: int, low: int, high: int) -> list[int]:
    """n values with a unique maximum and minimum, so "highest"/"lowest" have one answer."""
    return rng.choice(np.arange(low, high), size=n, replace=False).tolist()


def make_chart(rng: np.random.Generator, themes: list, metrics: list, kind: str | None = None) -> dict[str, Any]:
    """The data of one chart (of `kind`, else a random kind) and the question/answer pairs it supports."""
    kind = kind or KINDS[int(rng.integers(len(KINDS)))]
    color = COLORS[int(rng.integers(len(COLORS)))]
    if kind == "line":
        title, unit = metrics[int(rng.integers(len(metrics)))]
        start = int(rng.integers(2010, 2018))
        labels = [str(year) for year in range(start, start + int(rng.integers(5, 9)))]
        values = _distinct_values(rng, len(labels), 10, 100)
        best = labels[values.index(max(values))]
        a, b = sorted(rng.choice(len(labels), size=2, replace=False).tolist())
        year = int(rng.integers(len(labels)))
        qa = [
            (f"In which year was the {title.lower()} highest?", best),
            (f"What was the {title.lower()} in {labels[year]}?", f"{values[year]} {unit}"),
            (
                f"Did the {title.lower()} increase or decrease between {labels[a]} and {labels[b]}?",
                "It increased." if values[b] > values[a] else "It decreased.",
            ),
            ("How many years does the chart cover?", str(len(labels))),
        ]
        return {
            "kind": kind,
            "title": title,
            "unit": unit,
            "labels": labels,
            "values": values,
            "color": color,
            "qa": qa,
        }
    title, noun, pool, unit = themes[int(rng.integers(len(themes)))]
    n = int(rng.integers(3, 6)) if kind == "pie" else int(rng.integers(3, min(8, len(pool)) + 1))
    labels = sorted(rng.choice(pool, size=n, replace=False).tolist())
    if kind == "pie":
        cuts = sorted(rng.choice(np.arange(5, 96), size=n - 1, replace=False).tolist())
        values = [b - a for a, b in zip([0, *cuts], [*cuts, 100], strict=False)]
        while len(set(values)) < n or min(values) < 4:
            cuts = sorted(rng.choice(np.arange(5, 96), size=n - 1, replace=False).tolist())
            values = [b - a for a, b in zip([0, *cuts], [*cuts, 100], strict=False)]
        pick = int(rng.integers(n))
        qa = [
            (f"What percentage does {labels[pick]} account for?", f"{values[pick]}%"),
            (f"Which {noun} has the largest share?", labels[values.index(max(values))]),
            (f"Which {noun} has the smallest share?", labels[values.index(min(values))]),
            ("How many slices does the pie chart have?", str(n)),
        ]
        return {
            "kind": kind,
            "title": f"Share of {title.lower()}",
            "unit": "%",
            "labels": labels,
            "values": values,
            "color": color,
            "qa": qa,
        }
    values = _distinct_values(rng, n, 5, 100)
    a, b = rng.choice(n, size=2, replace=False).tolist()
    pick = int(rng.integers(n))
    qa = [
        (f"Which {noun} has the highest value?", labels[values.index(max(values))]),
        (f"Which {noun} has the lowest value?", labels[values.index(min(values))]),
        (f"What is the value for {labels[pick]}?", f"{values[pick]} {unit}"),
        ("How many bars are shown in the chart?", str(n)),
        (f"What is the difference between {labels[a]} and {labels[b]}?", f"{abs(values[a] - values[b])} {unit}"),
    ]
    return {"kind": kind, "title": title, "unit": unit, "labels": labels, "values": values, "color": color, "qa": qa}


def render(chart: dict[str, Any]) -> bytes:
    """The chart as PNG bytes (384 x 288 px); values are printed on the marks, as in ChartQA."""
    figure = Figure(figsize=(4.8, 3.6), dpi=80)
    FigureCanvasAgg(figure)
    # fixed margins: tight_layout costs more than the drawing itself
    figure.subplots_adjust(**MARGINS[chart["kind"]])
    ax = figure.add_subplot()
    labels, values = chart["labels"], chart["values"]
    if chart["kind"] == "bar":
        ax.bar_label(ax.bar(labels, values, color=chart["color"]), fontsize=8)
        ax.set_ylabel(chart["unit"])
        ax.tick_params(axis="x", labelsize=7, labelrotation=30)
    elif chart["kind"] == "barh":
        ax.bar_label(ax.barh(labels, values, color=chart["color"]), fontsize=8, padding=2)
        ax.set_xlabel(chart["unit"])
        ax.tick_params(axis="y", labelsize=8)
    elif chart["kind"] == "line":
        ax.plot(labels, values, marker="o", color=chart["color"])
        for x, y in zip(labels, values, strict=False):
            ax.annotate(str(y), (x, y), textcoords="offset points", xytext=(0, 5), ha="center", fontsize=7)
        ax.set_ylabel(chart["unit"])
        ax.set_ylim(0, 110)
        ax.tick_params(axis="x", labelsize=7)
    else:
        ax.pie(
            values,
            labels=labels,
            autopct=lambda p: f"{round(p)}%",
            colors=COLORS[: len(values)],
            textprops={"fontsize": 8},
            startangle=90,
            counterclock=False,
        )
    if chart.get("house_style"):
        # the benchmark's own look (grey panel, grid), as real benchmarks come from other
        # publishers than the training charts: template look-alikes otherwise reach SSCD 0.95
        ax.set_facecolor("#e6e6e6")
        ax.grid(True, color="white", linewidth=1.2)
        ax.set_axisbelow(True)
    ax.set_title(chart["title"], fontsize=10)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def render_all(charts: list[dict[str, Any]]) -> list[bytes]:
    """Render many charts, on every core: matplotlib spends ~0.1 s per chart on text layout."""
    workers = min(os.cpu_count() or 1, 4)
    if workers < 2 or len(charts) < 32:
        return [render(chart) for chart in charts]
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(render, charts, chunksize=8))


def _turns(rng: np.random.Generator, qa: list[tuple[str, str]], count: int) -> list[tuple[str, str]]:
    return [qa[i] for i in sorted(rng.choice(len(qa), size=min(count, len(qa)), replace=False).tolist())]


def build(corpus: Corpus) -> None:
    train_spec, bench_spec = specs(corpus.prefix)

    # benchmark: one question per chart, other themes than training
    rng = corpus.rng("chartqa_local")
    items = []
    for index in range(BENCH_ITEMS):
        chart = make_chart(rng, BENCH_THEMES, BENCH_METRICS, kind=KINDS[index % len(KINDS)]) | {"house_style": True}
        question, answer = chart["qa"][int(rng.integers(len(chart["qa"])))]
        items.append({"item_id": f"chartqa-local-{index:03d}", "chart": chart, "question": question, "answer": answer})

    # training subset: chart data first, then every chart rendered in one parallel pass
    rng = corpus.rng("charts")
    records: list[dict[str, Any]] = []
    for _ in range(TRAIN_CHARTS * corpus.scale):
        chart = make_chart(rng, TRAIN_THEMES, TRAIN_METRICS)
        records.append({"chart": chart, "turns": _turns(rng, chart["qa"], int(rng.integers(2, 4)))})
    chart = make_chart(rng, TRAIN_THEMES, TRAIN_METRICS)
    turns = _turns(rng, chart["qa"], 2)
    empty_turn = {"chart": chart, "turns": [turns[0], ("   ", ""), turns[1]], "empty_turn": 1}
    to_render = [*items, *records, empty_turn]
    for record, data in zip(to_render, render_all([r["chart"] for r in to_render]), strict=False):
        record["bytes"] = data

    corpus.write_parquet(
        "chartqa_local/test.parquet",
        pa.table(
            {
                "item_id": [i["item_id"] for i in items],
                "image": pa.array([{"bytes": i["bytes"], "path": f"{i['item_id']}.png"} for i in items], IMAGE_STRUCT),
                "question": [i["question"] for i in items],
                "answer": [i["answer"] for i in items],
            }
        ),
    )
    corpus.record(bench_spec, "chartqa_local", records=len(items), samples=len(items), images=len(items))

    special: list[dict[str, Any]] = []
    for transformation, kind, must_find in INJECTED:
        taken = {id(s["item"]) for s in special}
        candidates = [i for i in items if i["chart"]["kind"] == kind and id(i) not in taken]
        item = candidates[int(rng.integers(len(candidates)))]
        data, extension = transform_copy(item["bytes"], transformation)
        others = [qa for qa in item["chart"]["qa"] if qa[0] != item["question"]]
        turns = [(item["question"], item["answer"]), *_turns(rng, others, 1)]
        special.append(
            {
                "bytes": data,
                "extension": extension,
                "turns": turns,
                "item": item,
                "transformation": transformation,
                "must_find": must_find,
            }
        )
    special.append(empty_turn)
    special.append(
        {
            "bytes": decompression_bomb_png(BOMB_SIDE, BOMB_SIDE),
            "turns": [("What is shown in the chart?", "A blank chart.")],
            "broken": "decompression_bomb",
        }
    )
    records = insert_at_random(rng, records, special)

    for start in range(0, len(records), ROWS_PER_FILE):
        file = f"charts/train-{start // ROWS_PER_FILE:05d}.parquet"
        ids, images, texts = [], [], []
        for row, record in enumerate(records[start : start + ROWS_PER_FILE]):
            key = f"chart-{start + row:05d}"
            ids.append(key)
            images.append([{"bytes": record["bytes"], "path": f"{key}.{record.get('extension', 'png')}"}])
            texts.append([{"user": u, "assistant": a} for u, a in record["turns"]])
            where = ref(corpus, "charts", file, row=row, key=key, image_bytes=record["bytes"]) | {"image_index": 0}
            if "item" in record:
                item = record["item"]
                corpus.contamination.append(
                    {
                        "benchmark": "chartqa_local",
                        "item_id": item["item_id"],
                        "benchmark_ref": ref(
                            corpus,
                            "chartqa_local",
                            "chartqa_local/test.parquet",
                            row=items.index(item),
                            key=item["item_id"],
                            image_bytes=item["bytes"],
                        ),
                        "training": where,
                        "transformation": record["transformation"],
                        "must_find": record["must_find"],
                    }
                )
            if "empty_turn" in record:
                corpus.dropped_turns.append(
                    {
                        "reason": "empty_turn",
                        **where,
                        "turn_index": record["empty_turn"],
                        "turns": len(record["turns"]),
                        "turns_left": len(record["turns"]) - 1,
                    }
                )
            if record.get("broken") == "decompression_bomb":
                corpus.broken.append(
                    {
                        "reason": "decompression_bomb",
                        "stage": "clean",
                        **where,
                        "declared_size": [BOMB_SIDE, BOMB_SIDE],
                        "bytes": len(record["bytes"]),
                        "detail": f"PNG header declares {BOMB_SIDE}x{BOMB_SIDE} = {BOMB_SIDE**2:,} pixels",
                    }
                )
        corpus.write_parquet(
            file,
            pa.table(
                {
                    "id": ids,
                    "images": pa.array(images, pa.list_(IMAGE_STRUCT)),
                    "texts": pa.array(texts, pa.list_(TURN_STRUCT)),
                }
            ),
        )
    corpus.record(train_spec, "charts", records=len(records), samples=len(records), images=len(records))
