"""Benchmark catalogues: the lmms-eval units of the reference, the local demo's list, specs."""

from __future__ import annotations

import pytest
import yaml

from etl.benchmarks import BenchmarkUnit, load_catalogue, to_source_spec
from etl.config import PROJECT_ROOT, ConfigError, load_source_spec

BENCHMARKS = PROJECT_ROOT / "conf" / "benchmarks"

# The 38 lmms-lab datasets of the reference's "66 benchmark units", written out by hand.
REFERENCE_DATASETS = {
    "lmms-lab/ai2d", "lmms-lab/ai2d-no-mask", "lmms-lab/ChartQA", "lmms-lab/COCO-Caption",
    "lmms-lab/COCO-Caption2017", "lmms-lab/continous-benchmark", "lmms-lab/DC100_EN", "lmms-lab/DocVQA",
    "lmms-lab/Egothink", "lmms-lab/Ferret-Bench", "lmms-lab/flickr30k", "lmms-lab/GQA", "lmms-lab/LiveBench",
    "lmms-lab/LLaVA-Bench-Wilder", "lmms-lab/LLaVA-NeXT-Interleave-Bench", "lmms-lab/MIA-Bench",
    "lmms-lab/MMBench_EN", "lmms-lab/MME", "lmms-lab/MMT-Benchmark", "lmms-lab/MMT_MI-Benchmark", "lmms-lab/MMMU",
    "lmms-lab/MMVet", "lmms-lab/NoCaps", "lmms-lab/OCRBench-v2", "lmms-lab/POPE", "lmms-lab/RealWorldQA",
    "lmms-lab/RefCOCO", "lmms-lab/ScienceQA", "lmms-lab/SEED-Bench", "lmms-lab/SEED-Bench-2", "lmms-lab/ST-VQA",
    "lmms-lab/TextCaps", "lmms-lab/textvqa", "lmms-lab/VisualWebBench", "lmms-lab/VizWiz-Caps",
    "lmms-lab/VizWiz-VQA", "lmms-lab/VQAv2", "lmms-lab/vstar-bench",
}
# Configs per dataset, as the reference expands them (datasets not listed have none).
REFERENCE_CONFIGS = {
    "lmms-lab/continous-benchmark": {"ESPN", "arxiv", "bbc_news", "wiki_articles"},
    "lmms-lab/DocVQA": {"DocVQA", "InfographicVQA"},
    "lmms-lab/Egothink": {
        "Activity", "Forecasting", "Localization_location", "Localization_spatial", "Object_affordance",
        "Object_attribute", "Object_existence", "Planning_assistance", "Planning_navigation",
        "Reasoning_comparing", "Reasoning_counting", "Reasoning_situated",
    },
    "lmms-lab/GQA": {"test_all_images"},
    "lmms-lab/LiveBench": {"2024-05", "2024-06", "2024-07", "2024-08", "2024-09"},
    "lmms-lab/LLaVA-NeXT-Interleave-Bench": {"in_domain", "multi_view_in_domain", "out_of_domain"},
    "lmms-lab/ScienceQA": {"ScienceQA-FULL", "ScienceQA-IMG"},
    "lmms-lab/VisualWebBench": {
        "action_ground", "action_prediction", "element_ground", "element_ocr", "heading_ocr", "web_caption", "webqa",
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


def test_to_source_spec_gives_a_valid_columns_benchmark_spec(lmms_eval, tmp_path):
    spec = to_source_spec(lmms_eval.unit("chartqa"), "benchmarks/chartqa/test-*.parquet", category="Chart & Table")
    assert spec.format == "hf_parquet" and spec.options == {"layout": "columns"}
    assert spec.benchmark == spec.name == spec.subset == "chartqa" and spec.category == "Chart & Table"
    assert spec.fields == {"image": "image", "question": "question", "answer": "answer"}
    with_id = to_source_spec(lmms_eval.unit("vqav2"), "/data/vqav2")
    assert with_id.fields["id"] == "question_id" and with_id.category == "General VQA"
    # what a cluster user writes to conf/sources/ loads back as the same spec
    path = tmp_path / "vqav2.yaml"
    path.write_text(yaml.safe_dump(with_id.model_dump(exclude_defaults=True), sort_keys=False))
    assert load_source_spec(path) == with_id


def test_to_source_spec_refuses_units_the_columns_layout_cannot_read(lmms_eval):
    with pytest.raises(ConfigError, match=r"units\.gqa_test_all_images\.question_field: is null"):
        to_source_spec(lmms_eval.unit("gqa_test_all_images"), "x")
    with pytest.raises(ConfigError, match=r"units\.seed_bench\.images: 'list'"):
        to_source_spec(lmms_eval.unit("seed_bench"), "x")
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
        ("units:\n  - {name: a, hub_id: x/y}\n  - {name: a, hub_id: x/z}\n", "units: Value error, duplicate unit name 'a'"),
        ("units:\n  - {name: a, hub_id: x/y, images: many}\n", "units.0.images: Input should be"),
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

