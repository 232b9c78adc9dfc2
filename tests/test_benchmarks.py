"""Benchmark catalogues: the lmms-eval units of the reference, the local demo's list, specs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from etl.benchmarks import BenchmarkUnit, load_catalogue, to_source_spec, unit_location
from etl.cli import app
from etl.config import PROJECT_ROOT, ConfigError, IngestConfig, SourceSpec, load_source_spec
from etl.sources import plan_shards
from etl.sources.base import ReadContext
from etl.sources.files import ArrowFiles
from etl.sources.hf_parquet import read_hf_parquet
from tests.conftest import png_bytes

BENCHMARKS = PROJECT_ROOT / "conf" / "benchmarks"

# The 38 lmms-lab datasets of the reference's "66 benchmark units", written out by hand.
REFERENCE_DATASETS = {
    "lmms-lab/ai2d",
    "lmms-lab/ai2d-no-mask",
    "lmms-lab/ChartQA",
    "lmms-lab/COCO-Caption",
    "lmms-lab/COCO-Caption2017",
    "lmms-lab/continous-benchmark",
    "lmms-lab/DC100_EN",
    "lmms-lab/DocVQA",
    "lmms-lab/Egothink",
    "lmms-lab/Ferret-Bench",
    "lmms-lab/flickr30k",
    "lmms-lab/GQA",
    "lmms-lab/LiveBench",
    "lmms-lab/LLaVA-Bench-Wilder",
    "lmms-lab/LLaVA-NeXT-Interleave-Bench",
    "lmms-lab/MIA-Bench",
    "lmms-lab/MMBench_EN",
    "lmms-lab/MME",
    "lmms-lab/MMT-Benchmark",
    "lmms-lab/MMT_MI-Benchmark",
    "lmms-lab/MMMU",
    "lmms-lab/MMVet",
    "lmms-lab/NoCaps",
    "lmms-lab/OCRBench-v2",
    "lmms-lab/POPE",
    "lmms-lab/RealWorldQA",
    "lmms-lab/RefCOCO",
    "lmms-lab/ScienceQA",
    "lmms-lab/SEED-Bench",
    "lmms-lab/SEED-Bench-2",
    "lmms-lab/ST-VQA",
    "lmms-lab/TextCaps",
    "lmms-lab/textvqa",
    "lmms-lab/VisualWebBench",
    "lmms-lab/VizWiz-Caps",
    "lmms-lab/VizWiz-VQA",
    "lmms-lab/VQAv2",
    "lmms-lab/vstar-bench",
}
# Configs per dataset, as the reference expands them (datasets not listed have none).
REFERENCE_CONFIGS = {
    "lmms-lab/continous-benchmark": {"ESPN", "arxiv", "bbc_news", "wiki_articles"},
    "lmms-lab/DocVQA": {"DocVQA", "InfographicVQA"},
    "lmms-lab/Egothink": {
        "Activity",
        "Forecasting",
        "Localization_location",
        "Localization_spatial",
        "Object_affordance",
        "Object_attribute",
        "Object_existence",
        "Planning_assistance",
        "Planning_navigation",
        "Reasoning_comparing",
        "Reasoning_counting",
        "Reasoning_situated",
    },
    "lmms-lab/GQA": {"test_all_images"},
    "lmms-lab/LiveBench": {"2024-05", "2024-06", "2024-07", "2024-08", "2024-09"},
    "lmms-lab/LLaVA-NeXT-Interleave-Bench": {"in_domain", "multi_view_in_domain", "out_of_domain"},
    "lmms-lab/ScienceQA": {"ScienceQA-FULL", "ScienceQA-IMG"},
    "lmms-lab/VisualWebBench": {
        "action_ground",
        "action_prediction",
        "element_ground",
        "element_ocr",
        "heading_ocr",
        "web_caption",
        "webqa",
    },
}
EXTRAS = {"Lin-Chen/MMStar": "val", "echo840/OCRBench": "test"}  # MMStar's only split is `val`


@pytest.fixture(scope="module")
def lmms_eval():
    return load_catalogue(BENCHMARKS / "lmms_eval.yaml")


def test_reference_datasets_are_38_expanding_to_66():
    assert len(REFERENCE_DATASETS) == 38
    assert len(REFERENCE_DATASETS) - len(REFERENCE_CONFIGS) + sum(map(len, REFERENCE_CONFIGS.values())) == 66


def test_lmms_eval_catalogue_has_the_66_units_plus_mmstar_and_ocrbench(lmms_eval):
    units = lmms_eval.units
    assert len(units) == 68 and not lmms_eval.sources
    assert len({u.name for u in units}) == 68
    lmms = [u for u in units if u.hub_id.startswith("lmms-lab/")]
    assert len(lmms) == 66 and {u.hub_id for u in lmms} == REFERENCE_DATASETS
    assert all(u.split == "test" for u in lmms)
    for hub_id in REFERENCE_DATASETS:
        configs = [u.config for u in lmms if u.hub_id == hub_id]
        expected = REFERENCE_CONFIGS.get(hub_id)
        assert (sorted(configs) == sorted(expected)) if expected else configs == [None], hub_id
    extras = {u.hub_id: u.split for u in units if not u.hub_id.startswith("lmms-lab/")}
    assert extras == EXTRAS
    assert {"mmstar", "ocrbench"} <= {u.name for u in units}


def test_samples_catalogue_names_benchmark_specs_in_conf_sources():
    samples = load_catalogue(BENCHMARKS / "samples.yaml")
    assert samples.sources and not samples.units
    specs = [load_source_spec(p) for p in sorted((PROJECT_ROOT / "conf" / "sources").glob("*.yaml"))]
    chosen = samples.source_specs(specs)
    assert [s.name for s in chosen] == samples.sources and all(s.benchmark for s in chosen)
    # every benchmark spec of the demo is listed
    assert {s.name for s in specs if s.benchmark} == set(samples.sources)


def test_source_specs_rejects_unknown_and_non_benchmark_names():
    samples = load_catalogue(BENCHMARKS / "samples.yaml")
    specs = [load_source_spec(p) for p in sorted((PROJECT_ROOT / "conf" / "sources").glob("*.yaml"))]
    plain = next(s for s in specs if s.benchmark is None)
    with pytest.raises(ConfigError, match="sources: unknown"):
        samples.model_copy(update={"sources": ["nope"]}).source_specs(specs)
    with pytest.raises(ConfigError, match="not benchmark specs"):
        samples.model_copy(update={"sources": [plain.name]}).source_specs(specs)


def test_to_source_spec_gives_a_valid_benchmark_spec(lmms_eval, tmp_path):
    spec = to_source_spec(lmms_eval.unit("chartqa"), "benchmarks/chartqa/test-*.parquet", category="OCR QA")
    assert spec.format == "hf_parquet" and spec.options == {"layout": "benchmark"}
    assert spec.benchmark == spec.name == spec.subset == "chartqa" and spec.category == "OCR QA"
    assert spec.fields == {"image": "image", "question": "question", "answer": "answer"}
    with_id = to_source_spec(lmms_eval.unit("vqav2"), "/data/vqav2")
    assert with_id.fields["id"] == "question_id" and with_id.category == "General VQA"
    assert with_id.options == {"layout": "benchmark", "answer_key": "answer"}
    mmbench = to_source_spec(lmms_eval.unit("mmbench_en"), "/data/mmbench")
    assert mmbench.fields["context"] == "hint" and "options" not in mmbench.fields
    assert mmbench.options == {"layout": "benchmark", "option_columns": ["A", "B", "C", "D"], "answer_format": "letter"}
    # what a cluster user writes to conf/sources/ loads back as the same spec
    path = tmp_path / "vqav2.yaml"
    path.write_text(yaml.safe_dump(with_id.model_dump(exclude_defaults=True), sort_keys=False))
    assert load_source_spec(path) == with_id


def test_every_unit_converts_and_none_is_left_to_check(lmms_eval):
    assert all(to_source_spec(u, "x").benchmark == u.name for u in lmms_eval.units)
    text = (BENCHMARKS / "lmms_eval.yaml").read_text()
    assert "check on a cluster" not in text
    assert all(u.checked for u in lmms_eval.units)


def test_unit_location_follows_the_hub_layout(lmms_eval):
    assert unit_location(lmms_eval.unit("ai2d"), "/v/") == "/v/lmms-lab/ai2d/data/test-*.parquet"
    docvqa = unit_location(lmms_eval.unit("docvqa_docvqa"), "s3://b/x")
    assert docvqa == "s3://b/x/lmms-lab/DocVQA/DocVQA/test-*.parquet"
    assert unit_location(lmms_eval.unit("mmstar"), "/v") == "/v/Lin-Chen/MMStar/mmstar.parquet"


def test_to_source_spec_refuses_a_unit_without_images(lmms_eval):
    unit = BenchmarkUnit(name="u", hub_id="a/b", question_field="q", answer_field="a")
    with pytest.raises(ConfigError, match=r"units\.u\.image_field: is null"):
        to_source_spec(unit, "x")
    unit = BenchmarkUnit(name="u", hub_id="a/b", image_field="i", question_field="q", answer_field="a")
    with pytest.raises(ConfigError, match=r"units\.u: category: Value error") as caught:
        to_source_spec(unit, "x", category="Memes")
    assert "\n" not in str(caught.value)
    with pytest.raises(ConfigError, match="no unit named"):
        lmms_eval.unit("nope")


@pytest.mark.parametrize(
    "text, key",
    [
        ("units:\n  - {name: a, hub_id: x/y, splitt: test}\n", "units.0.splitt: Extra inputs are not permitted"),
        ("units:\n  - {name: bad name, hub_id: x/y}\n", "units.0.name: Value error"),
        ("units:\n  - {name: a, hub_id: nohub}\n", "units.0.hub_id: Value error"),
        (
            "units:\n  - {name: a, hub_id: x/y}\n  - {name: a, hub_id: x/z}\n",
            "units: Value error, duplicate unit name 'a'",
        ),
        ("units:\n  - {name: a, hub_id: x/y, images: many}\n", "units.0.images: Input should be"),
        ("units:\n  - {name: a, hub_id: x/y, data_files: ../up/*.parquet}\n", "units.0.data_files: Value error"),
        ("units:\n  - {name: a, hub_id: x/y, options_field: [A, A]}\n", "units.0.options_field: Value error"),
        ("units:\n  - {name: a, hub_id: x/y, answer_format: number}\n", "units.0.answer_format: Input should be"),
        # a grounding unit (ScreenSpot-V2): the box is the answer, reported by platform and element type
        ("units:\n  - {name: a, hub_id: x/y, bbox_field: bbox}\n", "units.0: Value error, bbox_field needs"),
        (
            "units:\n  - {name: a, hub_id: x/y, bbox_field: b, platform_field: p, element_type_field: t, answer_field: a}\n",
            "units.0: Value error, bbox_field is the answer",
        ),
        ("units:\n  - {name: a, hub_id: x/y, platform_field: p}\n", "units.0: Value error, platform_field and"),
        ("units:\n  - {name: a, hub_id: x/y, bbox_format: xy}\n", "units.0.bbox_format: Input should be"),
        ("units:\n  - {name: a, hub_id: x/y, bbox_units: inches}\n", "units.0.bbox_units: Input should be"),
        ("units:\n  - {name: a, hub_id: x/y, group_field: category}\n", "units.0: Value error, group_field needs"),
        ("sources: [a, a]\n", "sources: Value error, duplicate"),
        ("units: [\n", "not valid YAML"),
    ],
)
def test_bad_catalogue_is_one_line_naming_the_key(tmp_path, text, key):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_catalogue(path)
    message = str(caught.value)
    assert key in message and "\n" not in message and str(path) in message


def _benchmark_records(tmp_path, table: pa.Table, fields: dict, **options):
    pq.write_table(table, tmp_path / "t.parquet")
    spec = SourceSpec(
        name="u",
        format="hf_parquet",
        location=str(tmp_path / "t.parquet"),
        subset="u",
        category="General VQA",
        benchmark="u",
        fields=fields,
        options={"layout": "benchmark", **options},
    )
    ctx = ReadContext(spec, ArrowFiles(), IngestConfig())
    records = [r for shard in plan_shards(spec, spec.location) for r in read_hf_parquet(ctx, shard)]
    return records, ctx.stats


def test_benchmark_layout_appends_options_and_resolves_answers(tmp_path):
    image = {"bytes": png_bytes(), "path": None}
    table = pa.table(
        {
            "image_1": [image, image, image],
            "image_2": [image, None, None],  # an unused numbered column is null
            "question": ["Which colour?", "Which shape?", "Which size?"],
            "options": ["['red', 'green']", "['circle', 'square']", "[]"],  # MMMU's list written as text
            "answer": ["B", "?", None],
        }
    )
    records, stats = _benchmark_records(
        tmp_path,
        table,
        {"image": "image_1", "question": "question", "options": "options", "answer": "answer"},
        images="numbered",
        answer_format="letter",
    )
    assert [len(r.images) for r in records] == [2, 1, 1]
    assert [r.texts for r in records] == [
        [("Which colour?\nA. red\nB. green", "green")],
        [("Which shape?\nA. circle\nB. square", "?")],  # names no option: kept as given, and counted
        [("Which size?", "")],  # no answer (a test split): the item keeps its image and question
    ]
    assert stats == {"answers_not_an_option": 1}


def test_benchmark_layout_keeps_every_distinct_reference_and_quarantines_a_missing_column(tmp_path):
    image = {"bytes": png_bytes(), "path": None}
    answers = pa.list_(pa.struct([("answer", pa.string()), ("answer_id", pa.int64())]))
    table = pa.table(
        {
            "image": pa.array([image, None], pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
            "answers": pa.array(
                [
                    [
                        {"answer": "two", "answer_id": 1},
                        {"answer": "two", "answer_id": 2},
                        {"answer": "2", "answer_id": 3},
                    ],
                    None,
                ],
                answers,
            ),
            "question_id": [7, 8],
        }
    )
    records, _ = _benchmark_records(
        tmp_path, table, {"image": "image", "answer": "answers", "id": "question_id"}, answer_key="answer"
    )
    assert [(len(r.images), r.texts, r.item_id) for r in records] == [
        (1, [("", "two"), ("", "2")], "7"),
        (0, [("", "")], "8"),
    ]
    records, _ = _benchmark_records(tmp_path, table, {"image": "image", "question": "question"})
    assert {(str(r.reason), r.detail) for r in records} == {("missing_field", "missing field 'question'")}


def test_a_group_field_prefixes_the_item_id_with_the_items_category(tmp_path):
    """MME's two questions of an image share `question_id`; its totals sum per `category`."""
    image = {"bytes": png_bytes(), "path": None}
    table = pa.table(
        {
            "image": [image, image, image],
            "question": ["Is it red?", "Is it blue?", "Is it round?"],
            "answer": ["Yes", "No", "Yes"],
            "question_id": ["1.png", "1.png", "2.png"],
            "category": ["color", "color", None],  # no category: the id alone
        }
    )
    fields = {"image": "image", "question": "question", "answer": "answer", "id": "question_id", "group": "category"}
    records, _ = _benchmark_records(tmp_path, table, fields)
    assert [r.item_id for r in records] == ["color/1.png", "color/1.png", "2.png"]


def test_benchmark_layout_writes_a_grounding_items_box_as_its_reference(tmp_path):
    """`bbox_field` (ScreenSpot-V2): one answer, the box in fractions of the screenshot with the
    platform and element type; `bbox_format: xyxy` reads [left, top, right, bottom] pixels."""
    from etl.train.metrics import click_accuracy

    image = {"bytes": png_bytes((200, 100)), "path": None}
    table = pa.table(
        {
            "image": [image, image],
            "instruction": ["open the menu", "close the dialog"],
            "bbox": [[20.0, 10.0, 60.0, 30.0], [150.0, 50.0, 160.0, 60.0]],
            "data_source": ["macos", "gitlab"],
            "data_type": ["icon", "text"],
        }
    )
    fields = {
        "image": "image",
        "question": "instruction",
        "bbox": "bbox",
        "platform": "data_source",
        "element_type": "data_type",
    }
    records, _ = _benchmark_records(tmp_path, table, fields, bbox_format="xyxy")
    assert [r.texts[0][0] for r in records] == ["open the menu", "close the dialog"]
    references = [json.loads(r.texts[0][1]) for r in records]
    assert references == [
        {"bbox": [0.1, 0.1, 0.3, 0.3], "platform": "desktop", "element_type": "icon"},
        {"bbox": [0.75, 0.5, 0.8, 0.6], "platform": "web", "element_type": "text"},
    ]
    assert click_accuracy("click(x=0.2, y=0.2)", [records[0].texts[0][1]]) == 1.0
    assert click_accuracy("click(x=0.2, y=0.2)", [records[1].texts[0][1]]) == 0.0
    # the same boxes read as ScreenSpot's own [left, top, width, height] (the default)
    records, _ = _benchmark_records(tmp_path, table, fields)
    assert json.loads(records[0].texts[0][1])["bbox"] == [0.1, 0.1, 0.4, 0.4]
    assert [(str(r.reason), r.detail) for r in records[1:]] == [
        ("adapter_error", "ActionError: out_of_range: bbox.x=310.0 (pixels) is outside the screen")
    ]
    records, _ = _benchmark_records(tmp_path, table.drop_columns(["data_type"]), fields)
    assert {(str(r.reason), r.detail) for r in records} == {("missing_field", "missing field 'data_type'")}


def _cli(*args: str):
    return CliRunner().invoke(app, ["benchmarks", *args])


def test_specs_writes_68_specs_offline_and_list_says_what_is_present(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = _cli("specs", "--catalogue", "lmms_eval", "--location", "benchmarks", "--out", "specs")
    assert result.exit_code == 0, result.output
    written = sorted((tmp_path / "specs").glob("*.yaml"))
    assert len(written) == 68
    ai2d = load_source_spec(tmp_path / "specs" / "ai2d.yaml")
    assert ai2d.location == f"{tmp_path}/benchmarks/lmms-lab/ai2d/data/test-*.parquet"  # made absolute
    assert ai2d.benchmark == "ai2d" and ai2d.options["answer_format"] == "index"

    (tmp_path / "benchmarks/lmms-lab/ai2d/data").mkdir(parents=True)
    pq.write_table(pa.table({"x": [1]}), tmp_path / "benchmarks/lmms-lab/ai2d/data/test-00000-of-00001.parquet")
    listed = _cli("list", "--catalogue", "lmms_eval", "--location", "benchmarks")
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert len(lines) == 69 and lines[-1] == "1 of 68 unit(s) present under benchmarks"
    ai2d_line = next(line for line in lines if line.startswith("ai2d "))
    assert "lmms-lab/ai2d test" in ai2d_line and "options=options" in ai2d_line and "present (1 file(s))" in ai2d_line
    assert next(line for line in lines if line.startswith("mmstar ")).endswith("missing")

    bad = _cli("specs", "--catalogue", "lmms_eval", "--location", "b", "--out", "s", "--unit", "nope")
    assert bad.exit_code == 2 and "no unit named 'nope'" in bad.output


@pytest.mark.parametrize("env", [{"HF_HUB_OFFLINE": "1"}, {"HF_ENDPOINT": "http://127.0.0.1:9"}])
def test_pull_without_the_hub_says_which_layout_to_copy_in(tmp_path, env):
    """The real huggingface_hub client, offline or against a closed port: no network wait."""
    command = [
        sys.executable,
        "-m",
        "etl.cli",
        "benchmarks",
        "pull",
        "--catalogue",
        "lmms_eval",
        "--out",
        str(tmp_path / "b"),
        "--unit",
        "ai2d",
        "--unit",
        "mmstar",
        "--timeout",
        "2",
    ]
    environment = {**os.environ, "HF_HOME": str(tmp_path / "hf"), **env}

    def pull():
        return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=PROJECT_ROOT, env=environment)

    done = pull()
    assert done.returncode == 2, done.stderr
    assert "the Hugging Face Hub cannot be reached" in done.stderr and "0 of 2 unit(s) are present" in done.stderr
    assert f"{tmp_path}/b/lmms-lab/ai2d/data/test-*.parquet" in done.stderr
    assert f"{tmp_path}/b/Lin-Chen/MMStar/mmstar.parquet" in done.stderr
    # once the files are copied in by hand, pull without the Hub keeps them (huggingface_hub returns the folder)
    for relative in ("lmms-lab/ai2d/data/test-00000-of-00001.parquet", "Lin-Chen/MMStar/mmstar.parquet"):
        (tmp_path / "b" / relative).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"x": [1]}), tmp_path / "b" / relative)
    again = pull()
    assert again.returncode == 0, again.stderr
    assert "ai2d: 1 file(s)" in again.stdout and "mmstar: 1 file(s)" in again.stdout
