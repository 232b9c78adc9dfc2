"""Every unit of conf/benchmarks/lmms_eval.yaml, end to end without the Hub: a tiny parquet file per
unit in that dataset's own schema (column names and Arrow types as its dataset card / lmms-eval's
task code give them), the specs `finevision benchmarks specs` writes, one real ingest of all 68 into
benchmark_items, and each item's images, question (with its options) and answers checked."""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from etl import tables
from etl.benchmarks import load_catalogue
from etl.cli import app
from etl.config import PROJECT_ROOT
from etl.jobs import ingest
from etl.runs import PipelineRun

IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
OPTIONS = ["red", "green", "blue"]


@dataclass
class Schema:
    """One dataset's columns as its card lists them. `answer` kinds: string, index_string (AI2D's
    "1"), index_int (ScienceQA), letter, strings (a list of references), structs (VQAv2)."""

    image: str = "image"
    images: str = "single"  # single | list | numbered:<first>-<last> | nullable (a text-only row has none)
    question: str | None = "question"
    context: str | None = None
    options: str | None = None  # list | text (MMMU) | columns
    options_column: str = "options"
    option_columns: list[str] = field(default_factory=list)
    answer: str | None = "answer"
    answer_kind: str = "string"
    id: str | None = None
    id_type: pa.DataType = pa.string()
    group: str | None = None  # the category column an official aggregate groups by (the item id's prefix)
    extra: dict[str, pa.DataType] = field(default_factory=dict)  # further columns the card lists, unread


QA = Schema()
LETTERS = [chr(ord("A") + i) for i in range(9)]
SCHEMAS: dict[str, Schema] = {
    "lmms-lab/ai2d": Schema(options="list", answer_kind="index_string"),
    "lmms-lab/ai2d-no-mask": Schema(options="list", answer_kind="index_string"),
    "lmms-lab/ChartQA": Schema(extra={"type": pa.string()}),
    "lmms-lab/COCO-Caption": Schema(
        question=None,
        answer_kind="strings",
        id="question_id",
        extra={"question": pa.string(), "id": pa.int64(), "file_name": pa.string()},
    ),
    "lmms-lab/COCO-Caption2017": Schema(
        question=None, answer_kind="strings", id="question_id", extra={"question": pa.string(), "id": pa.int64()}
    ),
    "lmms-lab/continous-benchmark": Schema(id="question_id"),
    "lmms-lab/continous-benchmark/bbc_news": Schema(
        id="question_id", options="list", extra={"rationale": pa.string(), "text_content": pa.string()}
    ),
    "lmms-lab/DC100_EN": Schema(images="nullable"),
    "lmms-lab/DocVQA": Schema(
        answer="answers",
        answer_kind="strings",
        id="questionId",
        extra={"docId": pa.int64(), "question_types": pa.list_(pa.string())},
    ),
    "lmms-lab/Egothink": Schema(id="id"),
    "lmms-lab/Ferret-Bench": Schema(answer="gpt_answer", id="question_id", id_type=pa.int64()),
    "lmms-lab/flickr30k": Schema(
        question=None,
        answer="caption",
        answer_kind="strings",
        id="img_id",
        extra={"sentids": pa.list_(pa.string()), "filename": pa.string()},
    ),
    "lmms-lab/GQA": Schema(question=None, answer=None, id="id"),
    "lmms-lab/LiveBench": Schema(
        image="images",
        images="list",
        id="id",
        id_type=pa.int64(),
        extra={"subtask": pa.string(), "criteria": pa.string()},
    ),
    "lmms-lab/LLaVA-Bench-Wilder": Schema(question="Question", answer="gpt4v_answer", id="question_id"),
    "lmms-lab/LLaVA-NeXT-Interleave-Bench": Schema(
        image="image_0",
        images="numbered:0-5",
        id="sample_id",
        extra={"question_type": pa.string(), "sub_task": pa.string()},
    ),
    "lmms-lab/LLaVA-NeXT-Interleave-Bench/multi_view_in_domain": Schema(
        image="image_0", images="numbered:0-5", question=None, id="sample_id", extra={"conversations": pa.string()}
    ),
    "lmms-lab/MIA-Bench": Schema(question="instruction", answer=None, extra={"components": pa.list_(pa.string())}),
    "lmms-lab/MMBench_EN": Schema(
        context="hint",
        options="columns",
        option_columns=["A", "B", "C", "D"],
        answer_kind="letter",
        id="index",
        id_type=pa.int64(),
        extra={"category": pa.string()},
    ),
    "lmms-lab/MME": Schema(id="question_id", group="category"),
    "lmms-lab/MMT-Benchmark": Schema(options="columns", option_columns=LETTERS, answer_kind="letter"),
    "lmms-lab/MMT_MI-Benchmark": Schema(images="list", options="columns", option_columns=LETTERS, answer_kind="letter"),
    "lmms-lab/MMMU": Schema(
        image="image_1",
        images="numbered:1-7",
        options="text",
        answer_kind="letter",
        id="id",
        extra={"question_type": pa.string(), "explanation": pa.string()},
    ),
    "lmms-lab/MMVet": Schema(id="question_id", extra={"capability": pa.list_(pa.string())}),
    "lmms-lab/NoCaps": Schema(
        question=None,
        answer="annotations_captions",
        answer_kind="strings",
        id="image_id",
        extra={"image_file_name": pa.string(), "image_height": pa.int32()},
    ),
    "lmms-lab/OCRBench-v2": Schema(answer="answers", answer_kind="strings", extra={"type": pa.string()}),
    "lmms-lab/POPE": Schema(id="question_id", extra={"category": pa.string()}),
    "lmms-lab/RealWorldQA": QA,
    "lmms-lab/RefCOCO": Schema(answer_kind="strings", id="question_id", extra={"bbox": pa.list_(pa.float64())}),
    "lmms-lab/ScienceQA": Schema(
        images="nullable",
        context="hint",
        options="list",
        options_column="choices",
        answer_kind="index_int",
        extra={"lecture": pa.string(), "subject": pa.string()},
    ),
    "lmms-lab/SEED-Bench": Schema(
        images="list",
        options="columns",
        answer_kind="letter",
        id="question_id",
        option_columns=["choice_a", "choice_b", "choice_c", "choice_d"],
    ),
    "lmms-lab/SEED-Bench-2": Schema(
        images="list",
        options="columns",
        answer_kind="letter",
        id="question_id",
        option_columns=["choice_a", "choice_b", "choice_c", "choice_d"],
    ),
    "lmms-lab/ST-VQA": Schema(answer=None, id="question_id", id_type=pa.int64()),
    "lmms-lab/TextCaps": Schema(question=None, answer="caption_str", id="image_id"),
    "lmms-lab/textvqa": Schema(
        answer="answers", answer_kind="strings", id="question_id", extra={"ocr_tokens": pa.list_(pa.string())}
    ),
    "lmms-lab/VisualWebBench": Schema(question=None, id="id", extra={"task_type": pa.string()}),
    "lmms-lab/VisualWebBench/action_ground": Schema(question="instruction", answer_kind="index_int", id="id"),
    "lmms-lab/VisualWebBench/action_prediction": Schema(
        question=None, options="list", answer_kind="index_int", id="id"
    ),
    "lmms-lab/VisualWebBench/element_ground": Schema(question="elem_desc", answer_kind="index_int", id="id"),
    "lmms-lab/VisualWebBench/webqa": Schema(answer_kind="strings", id="id"),
    "lmms-lab/VizWiz-Caps": Schema(question=None, answer=None),
    "lmms-lab/VizWiz-VQA": Schema(answer="answers", answer_kind="strings", id="question_id"),
    "lmms-lab/VQAv2": Schema(answer="answers", answer_kind="structs", id="question_id", id_type=pa.int64()),
    "lmms-lab/vstar-bench": Schema(question="text", answer="label", answer_kind="letter_inline", id="question_id"),
    "Lin-Chen/MMStar": Schema(answer_kind="letter_inline", id="index", id_type=pa.int64(), group="l2_category"),
    "echo840/OCRBench": Schema(answer_kind="strings", extra={"question_type": pa.string()}),
}


def schema_of(unit) -> Schema:
    return SCHEMAS.get(f"{unit.hub_id}/{unit.config}") or SCHEMAS[unit.hub_id]


def png(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (seed * 37 % 256, seed * 91 % 256, seed % 256)).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass
class Expected:
    images: list[bytes]
    question: str
    answers: list[str]
    item_id: str | None


def answer_cell(kind: str, full: bool):
    """Row 0 answers "green" (the second option), or a list of references with a repeat; row 1 has
    no answer, as a test split ships it (MMMU: a placeholder that names no option)."""
    if not full:
        return {"index_int": None, "strings": [], "structs": None}.get(kind, "")
    return {
        "string": "green",
        "index_string": "1",
        "index_int": 1,
        "letter": "B",
        "letter_inline": "B",
        "strings": ["green", "green", "light green"],
        "structs": [
            {"answer": "green", "answer_confidence": "yes", "answer_id": 1},
            {"answer": "green", "answer_confidence": "maybe", "answer_id": 2},
            {"answer": "light green", "answer_confidence": "yes", "answer_id": 3},
        ],
    }[kind]


def answer_type(kind: str) -> pa.DataType:
    if kind == "index_int":
        return pa.int64()
    if kind == "strings":
        return pa.list_(pa.string())
    if kind == "structs":
        fields = [("answer", pa.string()), ("answer_confidence", pa.string()), ("answer_id", pa.int64())]
        return pa.list_(pa.struct(fields))
    return pa.string()


def build_unit(unit, index: int) -> tuple[pa.Table, list[Expected]]:
    """Two rows of the unit's schema and what each must become."""
    schema = schema_of(unit)
    columns: dict[str, list] = {}
    types: dict[str, pa.DataType] = {}
    expected: list[Expected] = []
    for row in (0, 1):
        full = row == 0
        seed = index * 10 + row * 4
        # images
        if schema.images == "list":
            pictures = [png(seed), png(seed + 1)] if full else [png(seed)]
            columns.setdefault(schema.image, []).append([{"bytes": b, "path": None} for b in pictures])
            types[schema.image] = pa.list_(IMAGE)
        elif schema.images.startswith("numbered"):
            first, last = map(int, schema.images.split(":")[1].split("-"))
            pictures = [png(seed + k) for k in range(3 if full else 1)]
            for k, number in enumerate(range(first, last + 1)):
                value = {"bytes": pictures[k], "path": f"{k}.png"} if k < len(pictures) else None
                columns.setdefault(f"image_{number}", []).append(value)
                types[f"image_{number}"] = IMAGE
        else:
            pictures = [png(seed)] if full or schema.images != "nullable" else []
            columns.setdefault(schema.image, []).append({"bytes": pictures[0], "path": "x.png"} if pictures else None)
            types[schema.image] = IMAGE
        # texts
        parts = []
        if schema.context:
            columns.setdefault(schema.context, []).append("Look closely." if full else None)
            types[schema.context] = pa.string()
            parts += ["Look closely."] if full else []
        if schema.question:
            text = f"What is in picture {row} of {unit.name}?"
            columns.setdefault(schema.question, []).append(text)
            types[schema.question] = pa.string()
            parts.append(text)
        if schema.options == "list":
            columns.setdefault(schema.options_column, []).append(OPTIONS)
            types[schema.options_column] = pa.list_(pa.string())
        elif schema.options == "text":
            columns.setdefault(schema.options_column, []).append(repr(OPTIONS))
            types[schema.options_column] = pa.string()
        elif schema.options == "columns":
            values = OPTIONS + (["yellow"] if "choice_d" in schema.option_columns else [])
            for position, name in enumerate(schema.option_columns):
                empty = None if name == "D" else ""  # MMBench: null when unused; MMT: empty text
                columns.setdefault(name, []).append(values[position] if position < len(values) else empty)
                types[name] = pa.string()
        if schema.options:
            options = OPTIONS + (["yellow"] if "choice_d" in schema.option_columns else [])
            parts.append("\n".join(f"{chr(ord('A') + i)}. {text}" for i, text in enumerate(options)))
        question = "\n".join(parts)
        if schema.answer:
            kind = schema.answer_kind
            cell = answer_cell(kind, full)
            if unit.name == "mmmu" and not full:
                cell = "?"
            columns.setdefault(schema.answer, []).append(cell)
            types[schema.answer] = answer_type(kind)
            if not full:
                answers = ["?"] if unit.name == "mmmu" else [""]
            elif kind in ("strings", "structs"):
                answers = ["green", "light green"]
            elif kind == "letter_inline" or (kind == "index_int" and not schema.options):
                answers = ["B" if kind == "letter_inline" else "1"]  # no options to resolve against: kept as given
            else:
                answers = ["green"]
        else:
            answers = [""]
        item_id = None
        if schema.id:
            value = 100 + row if schema.id_type == pa.int64() else f"{unit.name}-{row}"
            columns.setdefault(schema.id, []).append(value)
            types[schema.id] = schema.id_type
            item_id = str(value)
        if schema.group:
            columns.setdefault(schema.group, []).append(f"group {row}")
            types[schema.group] = pa.string()
            item_id = f"group {row}/{item_id}"
        for name, kind in schema.extra.items():
            columns.setdefault(name, []).append(None)
            types[name] = kind
        expected.append(Expected(pictures, question, answers, item_id))
    table = pa.table({name: pa.array(values, types[name]) for name, values in columns.items()})
    return table, expected


@pytest.fixture(scope="module")
def catalogue():
    return load_catalogue(PROJECT_ROOT / "conf" / "benchmarks" / "lmms_eval.yaml")


def test_every_unit_has_a_fixture_schema_naming_the_catalogues_columns(catalogue):
    for unit in catalogue.units:
        schema = schema_of(unit)
        assert (schema.question, schema.answer, schema.id, schema.context, schema.group) == (
            unit.question_field,
            unit.answer_field,
            unit.id_field,
            unit.context_field,
            unit.group_field,
        ), unit.name
        options = schema.option_columns if schema.options == "columns" else schema.options and schema.options_column
        assert options == unit.options_field, unit.name
        assert unit.checked.strip(), f"{unit.name}: no record of where its columns were checked"


@pytest.mark.timeout(1800)  # 68 one-file sources are 68 Spark tasks per pass: slow on a crowded 2-core machine
def test_all_68_units_ingest_into_benchmark_items(spark, make_config, tmp_path, catalogue):
    hub = tmp_path / "hub"
    expected: dict[tuple[str, str], Expected] = {}
    for index, unit in enumerate(catalogue.units):
        table, rows = build_unit(unit, index)
        relative = unit.files_glob.replace("*", "00000-of-00001")
        path = hub / unit.hub_id / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
        for row, want in enumerate(rows):
            expected[(unit.name, row)] = want

    specs = tmp_path / "specs"
    result = CliRunner().invoke(
        app, ["benchmarks", "specs", "--catalogue", "lmms_eval", "--location", str(hub), "--out", str(specs)]
    )
    assert result.exit_code == 0, result.output
    assert len(list(specs.glob("*.yaml"))) == 68

    config = make_config(specs, tmp_path)
    run = PipelineRun(spark, config, "test")
    ingest.run(run)
    run.close()
    report = run.reports[0]
    assert report.dropped == {} and report.rows_in == report.rows_out == 136
    assert report.counters == {"shards": 68, "mmmu.answers_not_an_option": 1}  # one small file per unit

    items = (
        tables.read(spark, run.table("benchmark_items"))
        .select("benchmark", "item_id", "images", "texts", "source_ref")
        .collect()
    )
    assert len(items) == 136
    seen = set()
    for item in items:
        key = (item["benchmark"], item["source_ref"]["row"])
        want = expected[key]
        seen.add(key)
        assert [i["bytes"] for i in item["images"]] == want.images, key
        assert [t["user"] for t in item["texts"]] == [want.question] * len(want.answers), key
        assert [t["assistant"] for t in item["texts"]] == want.answers, key
        if want.item_id is not None:
            assert item["item_id"] == want.item_id, key
    assert seen == set(expected)
