"""Gold export on a small hand-made silver table: removal, flags, duplicate clusters, ratings aligned
with turns, and the release folder read back with `datasets`, row for row."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest
from PIL import Image

from etl import release, tables
from etl.jobs import export as export_job
from etl.jobs.decontaminate import current_rules
from etl.runs import PipelineRun
from etl.schema import (
    CONTAMINATION_HITS,
    NEAR_DUPLICATE_CLUSTERS,
    REMOVED_SAMPLES,
    SAMPLES,
)
from tests.conftest import png_bytes

TURN_RATINGS = (
    "sample_id string, turn_index int, axis string, score int, expected_score double, judge_model string, "
    "prompt_hash string, error string, run_id string"
)


def _image(color):
    data = png_bytes((20, 16), color)
    return {"bytes": data, "path": None, "image_id": hashlib.sha256(data).hexdigest(), "width": 20, "height": 16}


def _sample(sid, subset, images, turns):
    return {
        "sample_id": sid,
        "subset": subset,
        "category": "General VQA",
        "source": subset,
        "images": images,
        "texts": [{"user": q, "assistant": a} for q, a in turns],
        "source_ref": None,
    }


@pytest.fixture(scope="module")
def exported(spark, tmp_path_factory):
    from etl.config import load_config

    root = tmp_path_factory.mktemp("export")
    config = load_config(overrides=[f"lakehouse={root / 'lake'}", "mlflow.enabled=false"])
    red, green, blue, grey = _image((255, 0, 0)), _image((0, 255, 0)), _image((0, 0, 255)), _image((90, 90, 90))
    silver = [
        _sample("s1", "alpha", [red], [("What colour?", "Red."), ("Sure?", "Yes.")]),
        _sample("s2", "alpha", [red, green], [("Colours?", "Red and green.")]),  # shares red with s1
        _sample("s3", "alpha", [blue], [("Colour?", "Blue.")]),  # near-duplicate of grey
        _sample("s4", "geo170k(qa)", [grey], [("Shade?", "Grey.")]),
        _sample("s5", "geo170k(qa)", [], [("2+2?", "4")]),  # text-only
        _sample("s6", "geo170k(qa)", [green], [("Removed?", "Yes.")]),
    ]
    run = PipelineRun(spark, config, "export-test")
    commit = run.commit("fixture")

    def write(name, rows, schema):
        tables.append(spark, run.table(name), spark.createDataFrame(rows, schema), commit, schema)

    write("silver_samples", silver, SAMPLES)
    rules = current_rules(config)
    write(
        "contamination_hits",
        [
            {
                "image_id": blue["image_id"],
                "sample_id": "s3",
                "subset": "alpha",
                "benchmark": "b",
                "benchmark_item_id": "i1",
                "similarity": 0.99,
                "model_id": "m",
                "threshold": 0.95,
                "method": "sscd-faiss-exact",
                "run_id": "r",
                "rule": rules["image"],
            },
            {
                "image_id": None,
                "sample_id": "s5",
                "subset": "geo170k(qa)",
                "benchmark": "b",
                "benchmark_item_id": "i2",
                "similarity": 1.0,
                "model_id": "m",
                "threshold": 0.95,
                "method": "text-ngram",
                "run_id": "r",
                "rule": rules["text"],
            },
            {  # a hit of another configuration (an earlier run's method): flags nothing
                "image_id": grey["image_id"],
                "sample_id": "s4",
                "subset": "beta",
                "benchmark": "b",
                "benchmark_item_id": "i1",
                "similarity": 0.5,
                "model_id": "m",
                "threshold": 0.95,
                "method": "sscd-verified",
                "run_id": "r0",
                "rule": "sscd-verified|m|sscd>=0.95|rule 0123456789ab",
            },
        ],
        CONTAMINATION_HITS,
    )
    cluster = min(blue["image_id"], grey["image_id"])
    write(
        "near_duplicate_clusters",
        [
            {"image_id": blue["image_id"], "cluster_id": cluster, "cluster_size": 2, "representative": True},
            {"image_id": grey["image_id"], "cluster_id": cluster, "cluster_size": 2, "representative": False},
        ],
        NEAR_DUPLICATE_CLUSTERS,
    )
    write(
        "removed_samples",
        [
            {
                "sample_id": "s6",
                "subset": "geo170k(qa)",
                "stage": "dedup",
                "reason": "near_duplicate",
                "detail": "",
                "run_id": "r",
            }
        ],
        REMOVED_SAMPLES,
    )
    from etl.specs import configured_judges

    judge = configured_judges(run.config)  # axis -> the configured (judge_model, prompt_hash)
    configured = [
        ("s1", 0, "relevance", 5, 4.8, None, "run1"),
        ("s1", 1, "relevance", 2, 2.1, None, "run1"),
        ("s1", 1, "relevance", 3, 3.0, None, "run2"),  # a re-run: the later run counts
        ("s1", 0, "formatting", 4, 4.0, None, "run1"),  # turn 1 not rated on formatting
        ("s2", 0, "relevance", None, None, "timeout", "run1"),  # failed judgement
        ("s4", 0, "visual_dependency", 1, 1.2, None, "run1"),
    ]
    ratings = [(s, t, axis, score, e, *judge[axis], error, r) for s, t, axis, score, e, error, r in configured] + [
        ("s4", 0, "relevance", 1, 1.0, "another-judge", judge["relevance"][1], None, "run1"),  # ignored
        ("s4", 0, "relevance", 1, 1.0, judge["relevance"][0], "another-prompt", None, "run1"),  # ignored
    ]
    spark.createDataFrame(ratings, TURN_RATINGS).write.format("delta").save(run.table("turn_ratings").path)
    export_job.run(run)
    gold = {r["sample_id"]: r for r in tables.read(spark, run.table("gold_samples")).collect()}
    return run, gold, {"red": red, "green": green, "blue": blue, "grey": grey, "cluster": cluster}


def test_gold_keeps_every_sample_but_the_removed_one_with_its_flags(exported):
    run, gold, images = exported
    assert set(gold) == {"s1", "s2", "s3", "s4", "s5"}
    assert {s for s, r in gold.items() if r["contaminated"]} == {"s3", "s5"}
    assert gold["s1"]["dup_cluster_id"] == images["red"]["image_id"] == gold["s2"]["dup_cluster_id"]
    assert gold["s3"]["dup_cluster_id"] == images["cluster"] == gold["s4"]["dup_cluster_id"]
    assert gold["s5"]["dup_cluster_id"] is None
    assert gold["s2"]["images"][1].asDict() == {"bytes": images["green"]["bytes"], "path": None}
    report = next(r for r in run.reports if r.stage == "export")
    assert (report.rows_in, report.rows_out, report.dropped) == (6, 5, {"near_duplicate": 1})


def test_ratings_are_aligned_with_turns_and_null_where_not_rated(exported):
    _, gold, _ = exported
    assert gold["s1"]["relevance_ratings"] == [5, 3] and gold["s1"]["relevance_min"] == 3
    # turn 1 has no formatting score: the minimum of the sample is unknown, not the 4 of turn 0
    assert gold["s1"]["formatting_ratings"] == [4, None] and gold["s1"]["formatting_min"] is None
    assert gold["s1"]["visual_dependency_ratings"] is None and gold["s1"]["visual_dependency_min"] is None
    assert gold["s2"]["relevance_ratings"] is None
    assert gold["s4"]["relevance_ratings"] is None
    assert gold["s4"]["visual_dependency_ratings"] == [1] and gold["s4"]["visual_dependency_min"] == 1


def test_without_turn_ratings_the_rating_columns_are_typed_nulls(spark, exported):
    from etl.stages.export import RATING_COLUMNS, rating_columns

    run, _, _ = exported
    silver = tables.read(spark, run.table("silver_samples"))
    rows = rating_columns(silver, None).collect()
    assert rows and all(r[c] is None for r in rows for c in RATING_COLUMNS)
    assert dict(rating_columns(silver, None).dtypes)["relevance_ratings"] == "array<int>"


def test_release_carries_the_clean_representatives_and_the_side_files_name_them(exported):
    """By default the release leaves out the contaminated samples (s3, s5) and all but one sample of
    each duplicate cluster (s1 and s2 share an image: s2 goes); s4 is left to represent its cluster."""
    import datasets
    import pyarrow.parquet as pq
    import yaml

    run, gold, _ = exported
    folder = Path(export_job.release_dir(run))
    released = {}
    for name, ids in (("alpha", ["s1"]), ("geo170k(qa)", ["s4"])):
        ds = datasets.load_dataset(str(folder), name=name, split="train")
        shard = sorted((folder / "_provenance" / release.folder_names([name])[name]).glob("train-*.parquet"))
        side = pq.read_table(shard).to_pylist()
        assert [r["sample_id"] for r in side] == ids and [r["row"] for r in side] == list(range(len(ids)))
        assert [r["subset"] for r in side] == [name] * len(ids)
        for sid, row in zip(ids, ds, strict=True):
            released[sid] = row
    for sid, row in released.items():
        want = gold[sid]
        assert [im.tobytes() for im in row["images"]] == [
            Image.open(io.BytesIO(i["bytes"])).convert("RGB").tobytes() for i in want["images"]
        ]
        assert row["texts"] == [t.asDict() for t in want["texts"]]
        assert row["source"] == want["source"] and row["relevance_ratings"] == want["relevance_ratings"]
        assert "sample_id" not in row and "contaminated" not in row
    default = datasets.load_dataset(str(folder), split="train")
    assert sorted(r["source"] for r in default) == ["alpha", "geo170k(qa)"]
    card = (folder / "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    assert [c["config_name"] for c in meta["configs"]] == ["default", "alpha", "geo170k(qa)"]
    sizes = {i["config_name"]: i["splits"][0]["num_examples"] for i in meta["dataset_info"]}
    assert sizes == {"default": 2, "alpha": 1, "geo170k(qa)": 1}
    assert "**left out**, 2 samples." in card and "(the smallest `sample_id`), 1 samples left out." in card
    assert "| alpha | `alpha` | General VQA | 1 | 1 | 2 | 0 | 1 | 1 |" in card
    assert "| geo170k(qa) | `geo170k_qa_` | General VQA | 1 | 1 | 1 | 0 | 1 | 0 |" in card
    report = next(r for r in run.reports if r.stage == "export")
    assert report.counters["release_left_out_contaminated"] == 2 and report.counters["release_left_out_duplicate"] == 1
