"""ScreenSpot-V2's click accuracy: the metric, its reference boxes, and the scores by platform and
element type, on a ScreenSpot-V2-shaped fixture made from the sample corpus's GUI screens."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from etl.samples.gui import write_gui_subset
from etl.sources.gui import FRACTION, Frame, parse_step, render_step
from etl.sources.gui.screenspot import screenspot_reference
from etl.train.evaluate import click_scores, format_scores, split_scores
from etl.train.metrics import METRIC_NAMES, click_accuracy, click_point, score_item
from tests.conftest import png_bytes


def screenspot_rows(root: Path) -> list[dict]:
    """ScreenSpot-V2's row shape (img_filename, bbox [left, top, width, height] in pixels,
    instruction, data_type, data_source) over the sample corpus's screens: the web subset's element
    boxes as they are, boxes of 40x40 px around the desktop and mobile subsets' click targets."""
    write_gui_subset(root, n_trajectories=4, seed=0)
    rows = []
    web = json.loads((root / "web_mind2web.jsonl").read_text().splitlines()[0])
    for step in web["steps"][:2]:
        rows.append(
            {
                "img_filename": step["screenshot"],
                "bbox": step["action"]["bbox"],
                "instruction": web["instruction"],
                "data_type": "text",
                "data_source": "shop",
            }
        )
    desktop = json.loads((root / "desktop_pyautogui.jsonl").read_text().splitlines()[0])
    [click] = parse_step(desktop["steps"][1]["action"], dialect="pyautogui", frame=Frame("pixels", 800, 600))
    x, y = click.kwargs["x"] * 800, click.kwargs["y"] * 600
    rows.append(
        {
            "img_filename": desktop["steps"][1]["screenshot"],
            "bbox": [x - 20, y - 20, 40, 40],
            "instruction": desktop["instruction"],
            "data_type": "icon",
            "data_source": "windows",
        }
    )
    mobile = json.loads((root / "mobile_android.jsonl").read_text().splitlines()[0])
    tap = next(s for s in mobile["steps"] if s["action"].get("action_type") == "click")
    x, y = tap["action"]["x"] / 1000 * 360, tap["action"]["y"] / 1000 * 640
    rows.append(
        {
            "img_filename": tap["screenshot"],
            "bbox": [x - 20, y - 20, 40, 40],
            "instruction": mobile["instruction"],
            "data_type": "icon",
            "data_source": "android",
        }
    )
    return rows


# ScreenSpot-V2's published forms, each cited to the file and commit it was read from.
FACTS = yaml.safe_load((Path(__file__).parent / "fixtures" / "screenspot_v2.yaml").read_text())
MIRROR = FACTS["evaluated_mirror"]


def mirror_columns() -> pa.Schema:
    """The parquet layout of the mirror the evaluators use (`evaluated_mirror`): the screenshot as the
    Hub's image struct, the box as four floats, the rest strings."""
    columns = MIRROR["columns"]
    return pa.schema(
        [
            (columns["image"], pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
            (columns["bbox"], pa.list_(pa.float64())),
            *[(columns[k], pa.string()) for k in ("instruction", "element_type", "platform")],
        ]
    )


def mirror_box(pixel_box: list[float], width: int, height: int) -> list[float]:
    """An authors' [left, top, width, height] pixel box written the mirror's way: [x1, y1, x2, y2]
    fractions of the screenshot (worked out here, not by the reader)."""
    left, top, w, h = pixel_box
    return [left / width, top / height, (left + w) / width, (top + h) / height]


def test_the_catalogue_unit_is_the_mirror_the_evaluators_use():
    """conf/benchmarks/gui.yaml's unit reads the copy smol2operator, lmms-eval and ScreenSuite score
    ScreenSpot-V2 on, with its columns and box form, and generates as many tokens as lmms-eval."""
    from etl.benchmarks import catalogue_path, load_catalogue
    from etl.train.evaluate import load_eval_config

    unit = load_catalogue(catalogue_path("gui")).unit("screenspot_v2")
    columns = MIRROR["columns"]
    assert (unit.hub_id, unit.split) == (MIRROR["hub_id"], MIRROR["split"])
    assert (unit.image_field, unit.question_field, unit.bbox_field) == (
        columns["image"],
        columns["instruction"],
        columns["bbox"],
    )
    assert (unit.platform_field, unit.element_type_field) == (columns["platform"], columns["element_type"])
    assert (unit.bbox_format, unit.bbox_units) == (MIRROR["bbox"]["format"], MIRROR["bbox"]["units"])
    assert load_eval_config().max_new_tokens_per_benchmark["screenspot_v2"] == MIRROR["max_new_tokens"]


def _read_unit(unit, root: Path, rows: list[dict]) -> list:
    """`rows` written as the mirror's parquet file under `root` in the Hub's layout, read back by the
    unit's source spec (`finevision benchmarks specs`' reader, without Spark)."""
    from etl.benchmarks import to_source_spec, unit_location
    from etl.config import IngestConfig
    from etl.sources import plan_shards
    from etl.sources.base import ReadContext
    from etl.sources.files import ArrowFiles
    from etl.sources.hf_parquet import read_hf_parquet

    path = root / unit.hub_id / unit.files_glob.replace("*", "00000-of-00001")
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, mirror_columns()), path)
    spec = to_source_spec(unit, unit_location(unit, str(root)))
    ctx = ReadContext(spec, ArrowFiles(), IngestConfig())
    return [r for shard in plan_shards(spec, spec.location) for r in read_hf_parquet(ctx, shard)]


def test_each_published_box_form_reads_to_the_same_reference_and_a_misread_one_does_not(tmp_path):
    """One element, [80, 60, 40, 30] pixels ([left, top, width, height]) of an 800x600 screenshot,
    in the mirror's form (fractions, [x1, y1, x2, y2]): the catalogue unit reads it to the box the
    authors' form gives; declared as any other form it reads to another box or is quarantined. The
    authors' own rows (VLMEvalKit's docstring) read as [x1, y1, x2, y2] end before they start."""
    from etl.benchmarks import catalogue_path, load_catalogue
    from etl.sources.gui.actions import ActionError

    columns = MIRROR["columns"]
    image = {"bytes": png_bytes((800, 600)), "path": "s.png"}
    row = {
        columns["image"]: image,
        columns["bbox"]: mirror_box([80, 60, 40, 30], 800, 600),
        columns["instruction"]: "open the menu",
        columns["element_type"]: "icon",
        columns["platform"]: "macos",
    }
    unit = load_catalogue(catalogue_path("gui")).unit("screenspot_v2")
    [record] = _read_unit(unit, tmp_path / "hub", [row])
    expected = {"bbox": [0.1, 0.1, 0.15, 0.15], "platform": "desktop", "element_type": "icon"}
    assert json.loads(record.texts[0][1]) == expected
    assert json.loads(screenspot_reference([80, 60, 40, 30], 800, 600, "macos", "icon")) == expected
    assert click_accuracy("click(0.125, 0.125)", [record.texts[0][1]]) == 1.0

    for i, (bbox_format, bbox_units) in enumerate([("xywh", "fraction"), ("xyxy", "pixels"), ("xywh", "pixels")]):
        wrong = unit.model_copy(update={"bbox_format": bbox_format, "bbox_units": bbox_units})
        [misread] = _read_unit(wrong, tmp_path / f"wrong{i}", [row])
        got = json.loads(misread.texts[0][1])["bbox"] if hasattr(misread, "texts") else str(misread.reason)
        assert got != expected["bbox"], (bbox_format, bbox_units)

    authors = FACTS["authors_release"]
    assert (authors["bbox"]["format"], authors["bbox"]["units"]) == ("xywh", "pixels")  # the reader's defaults
    for example in authors["example_rows"]:
        with pytest.raises(ActionError, match="bad_arguments: .* ends before it starts"):
            screenspot_reference(example["bbox"], 1280, 1600, example["data_source"], example["data_type"], "xyxy")
        left, top, w, h = example["bbox"]  # VLMEvalKit's convert_bbox: [x, y, x + w, y + h] / the size
        reference = screenspot_reference(example["bbox"], 1280, 1600, example["data_source"], example["data_type"])
        assert json.loads(reference)["bbox"] == [
            round(v, 4) for v in (left / 1280, top / 1600, (left + w) / 1280, (top + h) / 1600)
        ]


def pixel_box(item) -> tuple[float, float, float, float]:
    """The item's box [left, top, right, bottom] in fractions of its 800x600 / 360x640 screenshot,
    worked out here from ScreenSpot's [left, top, width, height] pixels (not by the reader)."""
    width, height = Image.open(Path(item["root"]) / item["img_filename"]).size
    left, top, w, h = item["bbox"]
    return left / width, top / height, (left + w) / width, (top + h) / height


@pytest.fixture(scope="module")
def items(tmp_path_factory) -> list[dict]:
    root = tmp_path_factory.mktemp("screenspot")
    out = []
    for row in screenspot_rows(root):
        width, height = Image.open(root / row["img_filename"]).size
        reference = screenspot_reference(row["bbox"], width, height, row["data_source"], row["data_type"])
        out.append({**row, "answer": reference, "root": str(root)})
    return out


def test_reference_boxes_use_the_training_normalisation(items):
    web = json.loads(items[0]["answer"])
    assert web["platform"] == "web" and web["element_type"] == "text"
    left, top, w, h = items[0]["bbox"]
    assert web["bbox"] == [
        round(left / 800, 4),
        round(top / 600, 4),
        round((left + w) / 800, 4),
        round((top + h) / 600, 4),
    ]
    # the click the training data writes for this element (its centre) is inside the reference box
    op = {"operation": "CLICK", "bbox": items[0]["bbox"]}
    trained = render_step(parse_step(op, dialect="web", frame=Frame("pixels", 800, 600)))
    assert click_accuracy(trained, [items[0]["answer"]]) == 1.0
    assert [json.loads(i["answer"])["platform"] for i in items] == ["web", "web", "desktop", "mobile"]


def test_click_accuracy_reads_predictions_with_the_training_parser(items):
    box = json.loads(items[2]["answer"])["bbox"]
    cx, cy = round((box[0] + box[2]) / 2, 4), round((box[1] + box[3]) / 2, 4)
    reference = [items[2]["answer"]]
    hits = [
        f"click({cx}, {cy})",  # smol2operator's ScreenSpot prompt asks for click(0.XXXX, 0.YYYY)
        f"Action: click(x={cx}, y={cy})",
        f"<think>\nThe icon is there.\n</think>\n<code>\nclick(x={cx}, y={cy})\n</code>",
        f"I will click it.\nclick(x={cx}, y={cy})",
        f"double_click(x={box[0]}, y={box[1]})",  # the box's edge counts as inside
    ]
    misses = [
        f"click(x={min(1.0, box[2] + 0.01)}, y={cy})",
        f"click(x={cx * 800}, y={cy * 600})",  # pixels are not the training coordinates: no point
        "navigate_back()",
        "click()",
        "the icon at the top",
        "",
    ]
    assert [click_accuracy(p, reference) for p in hits] == [1.0] * len(hits)
    assert [click_accuracy(p, reference) for p in misses] == [0.0] * len(misses)
    assert click_point(f"click(x={cx}, y={cy})") == (cx, cy)
    assert "click_accuracy" in METRIC_NAMES
    assert score_item("click_accuracy", f"click({cx}, {cy})", reference[0], "") == (1.0, None)
    assert parse_step(f"click({cx}, {cy})", dialect="unified", frame=FRACTION)  # the same parser


def test_scores_by_platform_and_element_type(spark, items):
    predictions = []
    for i, item in enumerate(items):
        box = json.loads(item["answer"])["bbox"]
        right = f"click(x={(box[0] + box[2]) / 2:.4f}, y={(box[1] + box[3]) / 2:.4f})"
        wrong = "click(x=0.0, y=0.0)"
        for j, prediction in enumerate([right, wrong if i == 0 else right]):
            score = click_accuracy(prediction, [item["answer"]])
            predictions.append(
                ("screenspot_v2", f"{i}-{j}", j == 1, "click_accuracy", item["answer"], prediction, score)
            )
    predictions.append(("easyvqa_test", "q", False, "exact_match", "red", "red", 1.0))
    frame = spark.createDataFrame(
        predictions,
        "benchmark string, item_id string, contaminated boolean, metric string, answer string, prediction string, score double",
    )
    by_part = {s.benchmark: s for s in click_scores(frame)}
    assert sorted(by_part) == ["screenspot_v2/desktop/icon", "screenspot_v2/mobile/icon", "screenspot_v2/web/text"]
    assert by_part["screenspot_v2/web/text"].all == pytest.approx(0.75)  # 3 of 4 clicks inside
    assert by_part["screenspot_v2/web/text"].contaminated == pytest.approx(0.5)
    assert by_part["screenspot_v2/mobile/icon"].all == 1.0 and by_part["screenspot_v2/mobile/icon"].n_all == 2
    printed = format_scores(split_scores(frame) + click_scores(frame))
    lines = printed.splitlines()
    assert any(line.startswith("screenspot_v2/web/text") and "0.750" in line for line in lines)
    assert any(line.startswith("screenspot_v2/desktop/icon") and "1.000" in line for line in lines)
    assert any(line.startswith("screenspot_v2 ") and "0.875" in line for line in lines)


@pytest.fixture(scope="module")
def ingested(spark, items, tmp_path_factory):
    """The fixture written as the evaluated mirror's parquet file (tests/fixtures/screenspot_v2.yaml)
    at the catalogue unit's Hub path, plus one row whose box leaves the screenshot, then `finevision
    benchmarks specs --catalogue gui` and `finevision ingest`'s job: (the `--set` overrides of the
    pipeline config, the config, the ingest report, benchmark_items rows by row)."""
    from typer.testing import CliRunner

    from etl import tables
    from etl.benchmarks import catalogue_path, load_catalogue
    from etl.cli import app
    from etl.config import load_config
    from etl.jobs import ingest
    from etl.runs import PipelineRun

    tmp = tmp_path_factory.mktemp("screenspot_v2")
    root = Path(items[0]["root"])
    unit = load_catalogue(catalogue_path("gui")).unit("screenspot_v2")
    columns = MIRROR["columns"]
    rows = []
    for item in items:
        data = (root / item["img_filename"]).read_bytes()
        width, height = Image.open(root / item["img_filename"]).size
        rows.append(
            {
                columns["image"]: {"bytes": data, "path": item["img_filename"]},
                columns["bbox"]: mirror_box(item["bbox"], width, height),
                columns["instruction"]: item["instruction"],
                columns["element_type"]: item["data_type"],
                columns["platform"]: item["data_source"],
            }
        )
    outside = mirror_box([790.0, 10.0, 40.0, 40.0], 800, 600)  # right edge at 830 px of 800
    rows.append(rows[2] | {columns["bbox"]: outside, columns["instruction"]: "the box leaves the screen"})
    path = tmp / "hub" / unit.hub_id / unit.files_glob.replace("*", "00000-of-00001")
    path.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, mirror_columns()), path)

    specs = tmp / "specs"
    args = ["benchmarks", "specs", "--catalogue", "gui", "--location", str(tmp / "hub"), "--out", str(specs)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    overrides = [
        f"lakehouse={tmp / 'lake'}",
        f"mlflow.tracking_uri=sqlite:///{tmp / 'm.db'}",
        "mlflow.enabled=false",
        f"sources_dir={specs}",
        f"data_root={tmp}",
    ]
    pipeline = load_config(overrides=overrides)
    run = PipelineRun(spark, pipeline, "screenspot-ingest")
    ingest.run(run)
    run.close()
    read = tables.read(spark, run.table("benchmark_items")).collect()
    return overrides, pipeline, run.reports[0], {r["source_ref"]["row"]: r for r in read}


def test_the_catalogue_unit_reads_screenspot_v2_boxes_as_click_references(items, ingested):
    _, _, report, by_row = ingested
    assert sorted(by_row) == [0, 1, 2, 3]  # the fifth row's box leaves the 800x600 screen: quarantined
    assert report.dropped == {"adapter_error": 1}
    for row, item in enumerate(items):
        got = by_row[row]
        assert got["benchmark"] == "screenspot_v2" and got["category"] == "Grounding & Counting"
        assert [i["bytes"] for i in got["images"]] == [(Path(item["root"]) / item["img_filename"]).read_bytes()]
        [turn] = got["texts"]
        assert turn["user"] == item["instruction"]
        reference = json.loads(turn["assistant"])
        assert (reference["platform"], reference["element_type"]) == [
            ("web", "text"),
            ("web", "text"),
            ("desktop", "icon"),
            ("mobile", "icon"),
        ][row]
        # clicks worked out from the pixel box: its centre and corners count, a point past its right
        # edge or below its bottom does not (an [x1, y1, x2, y2] reading would miss the 40 px boxes)
        left, top, right, bottom = pixel_box(item)
        centre = f"click(x={(left + right) / 2:.4f}, y={(top + bottom) / 2:.4f})"
        inside = [
            centre,
            f"click({left + 0.0001:.4f}, {top + 0.0001:.4f})",
            f"click({right - 0.0001:.4f}, {bottom - 0.0001:.4f})",
        ]
        outside = [
            f"click(x={right + 0.01:.4f}, y={(top + bottom) / 2:.4f})",
            f"click(x={(left + right) / 2:.4f}, y={bottom + 0.01:.4f})",
        ]
        assert [click_accuracy(p, [turn["assistant"]]) for p in inside] == [1.0] * 3, (row, reference)
        assert [click_accuracy(p, [turn["assistant"]]) for p in outside] == [0.0] * 2, (row, reference)


def test_finevision_evaluate_prints_click_accuracy_by_platform_and_element_type(spark, ingested, tmp_path):
    """The `finevision evaluate` command itself, with the tiny untrained model, on the benchmark_items
    the ScreenSpot-V2 catalogue unit ingested: it prints one row per platform and element type with
    its item count, and each row's figure is the mean of the click scores it wrote to
    eval_predictions, which re-scoring the predictions with `click_accuracy` gives again."""
    from typer.testing import CliRunner

    from etl import tables
    from etl.cli import app
    from etl.schema import CONTAMINATION_HITS
    from etl.train.config import load_train_config
    from etl.train.model import build_model, build_processor

    overrides, pipeline, _, _ = ingested
    config = load_train_config("tiny")
    processor = build_processor(config, pipeline.clean.tokenizer)
    build_model(config, processor).save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    ref = tables.TableRef.of(pipeline, "contamination_hits")
    commit = tables.Commit("test", "test", "0", "0")
    tables.overwrite(spark, ref, spark.createDataFrame([], CONTAMINATION_HITS), commit, CONTAMINATION_HITS)

    args = [arg for override in overrides for arg in ("--set", override)]
    args += ["evaluate", "--model", str(tmp_path / "model")]
    args += ["--eval-set", "max_new_tokens_per_benchmark.screenspot_v2=8", "--eval-set", "batch_size=4"]
    confs = {key: spark.conf.get(key, None) for key in ("spark.sql.shuffle.partitions", "spark.default.parallelism")}
    try:  # the command builds its session from the local profile: the test's own, whose confs it sets
        result = CliRunner().invoke(app, args)
    finally:
        for key, value in confs.items():
            if value is not None:
                spark.conf.set(key, value)
    assert result.exit_code == 0, result.output
    printed = {line.split()[0]: line.split() for line in result.output.splitlines() if line.startswith("screenspot_v2")}
    assert sorted(printed) == [
        "screenspot_v2",
        "screenspot_v2/desktop/icon",
        "screenspot_v2/mobile/icon",
        "screenspot_v2/web/text",
    ]
    assert {name: (row[1], row[5]) for name, row in printed.items()} == {
        "screenspot_v2": ("click_accuracy", "4"),
        "screenspot_v2/desktop/icon": ("click_accuracy", "1"),
        "screenspot_v2/mobile/icon": ("click_accuracy", "1"),
        "screenspot_v2/web/text": ("click_accuracy", "2"),
    }
    predictions = tables.read(spark, tables.TableRef.of(pipeline, "eval_predictions")).collect()
    assert len(predictions) == 4
    by_part: dict[str, list[float]] = {}
    for row in predictions:
        assert row["score"] == click_accuracy(row["prediction"], [row["answer"]]), row
        reference = json.loads(row["answer"])
        by_part.setdefault(f"screenspot_v2/{reference['platform']}/{reference['element_type']}", []).append(
            row["score"]
        )
    by_part["screenspot_v2"] = [row["score"] for row in predictions]
    assert {name: printed[name][2] for name in printed} == {
        name: f"{sum(scores) / len(scores):.3f}" for name, scores in by_part.items()
    }
