"""Merge or split turns at export (`export.turns`, etl/stages/turns.py) on a real Spark session:
ratings follow their turns, ids derive from the source ids, `turn_sources` says where each turn
came from, and the export job and its release keep the accounting."""

from __future__ import annotations

import hashlib

import pytest

from etl.config import ConfigError, load_config
from etl.schema import GOLD_RATING_AXES, GOLD_SAMPLES, SAMPLES
from etl.stages.export import gold_samples, release_exclusions
from tests.conftest import png_bytes

RATINGS = "sample_id string, turn_index int, axis string, score int, error string, run_id string"


def _image(color):
    data = png_bytes((12, 10), color)
    return {"bytes": data, "path": f"{color[0]}.png", "image_id": hashlib.sha256(data).hexdigest(), "width": 12}


RED, GREEN, BLUE = _image((255, 0, 0)), _image((0, 255, 0)), _image((0, 0, 255))


def _sample(sid, images, turns, row, subset="alpha"):
    return {
        "sample_id": sid,
        "subset": subset,
        "category": "General VQA",
        "source": subset,
        "images": images,
        "texts": [{"user": q, "assistant": a} for q, a in turns],
        "source_ref": {"file": "qa.jsonl", "member": None, "row": row},
    }


def _gold(spark, silver, ratings, turns, contaminated=(), clusters=()):
    return {
        r["sample_id"]: r
        for r in gold_samples(
            spark.createDataFrame(silver, SAMPLES),
            spark.createDataFrame([(s,) for s in contaminated], "sample_id string"),
            spark.createDataFrame(list(clusters), "image_id string, cluster_id string"),
            None,
            spark.createDataFrame(ratings, RATINGS),
            turns,
        ).collect()
    }


def _merged_id(*source_ids):
    return hashlib.sha256("\x1f".join(["merge", *source_ids]).encode()).hexdigest()[:32]


def _sources(row):
    return None if row["turn_sources"] is None else [(t["sample_id"], t["turn_index"]) for t in row["turn_sources"]]


# Three single-image questions of the red image, in file rows 2, 0, 1 (ids out of file order on
# purpose: turns follow the file, as ingest's group_by appends them).
QUESTIONS = [
    _sample("qa", [RED], [("Colour?", "Red.")], row=2),
    _sample("qb", [RED], [("Shape?", "Square.")], row=0),
    _sample("qc", [RED], [("Size?", "Small.")], row=1),
]
QUESTION_RATINGS = [
    ("qa", 0, "relevance", 5, None, "r1"),
    ("qb", 0, "relevance", 3, None, "r1"),
    ("qc", 0, "relevance", 4, None, "r1"),
    ("qb", 0, "formatting", 2, None, "r1"),  # the only formatting score: the other turns are unrated
]


def test_merge_of_three_questions_of_one_image_gives_one_sample_with_the_ratings_in_turn_order(spark):
    gold = _gold(spark, QUESTIONS, QUESTION_RATINGS, "merge")
    merged_id = _merged_id("qb", "qc", "qa")  # the source ids in turn (file) order
    assert set(gold) == {merged_id}
    row = gold[merged_id]
    assert [t["assistant"] for t in row["texts"]] == ["Square.", "Small.", "Red."]
    assert row["relevance_ratings"] == [3, 4, 5] and row["relevance_min"] == 3
    assert row["formatting_ratings"] == [2, None, None] and row["formatting_min"] is None
    assert row["visual_dependency_ratings"] is None and row["image_correspondence_ratings"] is None
    assert _sources(row) == [("qb", 0), ("qc", 0), ("qa", 0)]
    assert [(i["bytes"], i["path"]) for i in row["images"]] == [(RED["bytes"], RED["path"])]
    assert row["dup_cluster_id"] == RED["image_id"]  # the sources shared the image verbatim
    assert row["contaminated"] is False and row["subset"] == "alpha"


def test_merge_leaves_multi_image_lone_contaminated_and_other_subset_samples_apart(spark):
    """The rule: only samples with exactly one image merge, with the others of the same image,
    subset, source, category and contamination flag; anything else is left as it is."""
    silver = [
        *QUESTIONS[:2],
        _sample("pair", [RED, GREEN], [("Colours?", "Red, green.")], row=3),  # two images: never merged
        _sample("blue", [BLUE], [("Colour?", "Blue.")], row=4),  # alone with its image
        _sample("leak", [RED], [("Benchmark question?", "A.")], row=5),  # contaminated: not merged with clean
        _sample("other", [RED], [("Colour?", "Red.")], row=6, subset="beta"),  # another subset
        _sample("text", [], [("2+2?", "4"), ("3+3?", "6")], row=7),  # no image
    ]
    ratings = [("pair", 0, "relevance", 2, None, "r1"), ("leak", 0, "relevance", 1, None, "r1")]
    gold = _gold(spark, silver, ratings, "merge", contaminated=["leak"])
    merged_id = _merged_id("qb", "qa")
    assert set(gold) == {merged_id, "pair", "blue", "leak", "other", "text"}
    assert _sources(gold[merged_id]) == [("qb", 0), ("qa", 0)]
    for sid in ("pair", "blue", "leak", "other", "text"):
        assert gold[sid]["turn_sources"] is None, sid
    assert len(gold["pair"]["images"]) == 2 and gold["pair"]["relevance_ratings"] == [2]
    assert gold["leak"]["contaminated"] is True and gold["leak"]["relevance_ratings"] == [1]
    assert [t["assistant"] for t in gold["text"]["texts"]] == ["4", "6"]


def test_split_of_a_three_turn_sample_gives_three_samples_each_with_its_turns_ratings(spark):
    silver = [
        _sample("s", [RED, GREEN], [("Q0?", "A0."), ("Q1?", "A1."), ("Q2?", "A2.")], row=0),
        _sample("one", [BLUE], [("Colour?", "Blue.")], row=1),  # one turn: left as it is
    ]
    ratings = [
        ("s", 0, "relevance", 5, None, "r1"),
        ("s", 1, "relevance", 2, None, "r1"),
        ("s", 2, "relevance", 4, None, "r1"),
        ("s", 1, "formatting", 3, None, "r1"),
        ("one", 0, "relevance", 1, None, "r1"),
    ]
    gold = _gold(spark, silver, ratings, "split", clusters=[(RED["image_id"], "c")])
    assert set(gold) == {"s/turn0", "s/turn1", "s/turn2", "one"}
    for i, relevance in enumerate([5, 2, 4]):
        row = gold[f"s/turn{i}"]
        assert [(t["user"], t["assistant"]) for t in row["texts"]] == [(f"Q{i}?", f"A{i}.")]
        assert row["relevance_ratings"] == [relevance] and row["relevance_min"] == relevance
        assert _sources(row) == [("s", i)]
        assert [im["bytes"] for im in row["images"]] == [RED["bytes"], GREEN["bytes"]]  # every image of s
        assert row["dup_cluster_id"] == "c"  # s's flags
    # formatting: only turn 1 was rated; an unrated turn's row has no formatting score at all
    assert [gold[f"s/turn{i}"]["formatting_ratings"] for i in range(3)] == [None, [3], None]
    assert gold["s/turn1"]["formatting_min"] == 3
    assert gold["one"]["turn_sources"] is None and gold["one"]["relevance_ratings"] == [1]


def test_keep_is_every_silver_sample_unchanged(spark):
    silver = [*QUESTIONS, _sample("s", [RED, GREEN], [("Q0?", "A0."), ("Q1?", "A1.")], row=3)]
    ratings = [*QUESTION_RATINGS, ("s", 1, "relevance", 2, None, "r1")]
    gold = _gold(spark, silver, ratings, "keep")
    assert set(gold) == {"qa", "qb", "qc", "s"}
    assert all(r["turn_sources"] is None for r in gold.values())
    assert [t["assistant"] for t in gold["s"]["texts"]] == ["A0.", "A1."]
    assert gold["s"]["relevance_ratings"] == [None, 2] and gold["s"]["relevance_min"] is None
    assert gold["qb"]["relevance_ratings"] == [3] and gold["qb"]["formatting_ratings"] == [2]
    assert list(next(iter(gold.values())).asDict()) == GOLD_SAMPLES.fieldNames()


def test_the_release_keeps_or_leaves_out_the_turns_of_a_split_sample_together(spark):
    def row(sample_id, cluster):
        return {"sample_id": sample_id, "subset": "alpha", "category": "General VQA", "source": "alpha"} | {
            "contaminated": False,
            "dup_cluster_id": cluster,
        }

    gold = spark.createDataFrame(
        [
            *[row(f"a/turn{i}", "c") for i in range(3)],  # a < z: every turn of a represents cluster c
            row("z", "c"),
            *[row(f"y/turn{i}", "d") for i in range(2)],  # b < y: both turns of y go
            row("b", "d"),
        ],
        GOLD_SAMPLES,
    )
    excluded = {r["sample_id"]: r["excluded"] for r in release_exclusions(gold, False, False).collect()}
    assert excluded == {
        "a/turn0": None,
        "a/turn1": None,
        "a/turn2": None,
        "z": "duplicate",
        "y/turn0": "duplicate",
        "y/turn1": "duplicate",
        "b": None,
    }


def test_turns_and_gui_per_step_together_are_refused_naming_both():
    assert load_config().export.turns == "keep"
    with pytest.raises(ConfigError, match=r"export: .*turns 'split' and gui_per_step"):
        load_config(overrides=["export.gui_per_step=true", "export.turns=split"])
    with pytest.raises(ConfigError, match=r"export\.turns"):
        load_config(overrides=["export.turns=shuffle"])
    assert load_config(overrides=["export.turns=merge"]).export.turns == "merge"


@pytest.mark.parametrize("turns", ["merge", "split"])
def test_export_job_accounts_for_every_silver_sample_and_the_side_files_name_the_sources(spark, tmp_path, turns):
    """The job: rows in = samples held in gold + removed, the counters, and `turn_sources` in the
    release's `_provenance` side files, row for row with the shards."""
    import pyarrow.parquet as pq

    from etl import tables
    from etl.jobs import export as export_job
    from etl.runs import PipelineRun
    from etl.schema import CONTAMINATION_HITS, NEAR_DUPLICATE_CLUSTERS, REMOVED_SAMPLES

    config = load_config(overrides=[f"lakehouse={tmp_path / 'lake'}", "mlflow.enabled=false", f"export.turns={turns}"])
    run = PipelineRun(spark, config, f"turns-{turns}")
    commit = run.commit("fixture")
    silver = [*QUESTIONS, _sample("s", [GREEN], [("Q0?", "A0."), ("Q1?", "A1.")], row=3)]
    for name, rows, schema in (
        ("silver_samples", silver, SAMPLES),
        ("contamination_hits", [], CONTAMINATION_HITS),
        ("near_duplicate_clusters", [], NEAR_DUPLICATE_CLUSTERS),
        ("removed_samples", [], REMOVED_SAMPLES),
    ):
        tables.append(spark, run.table(name), spark.createDataFrame(rows, schema), commit, schema)
    export_job.run(run)

    report = next(r for r in run.reports if r.stage == "export")
    gold = {r["sample_id"]: r for r in tables.read(spark, run.table("gold_samples")).collect()}
    expected = (
        {_merged_id("qb", "qc", "qa"): [("qb", 0), ("qc", 0), ("qa", 0)], "s": None}
        if turns == "merge"
        else {"qa": None, "qb": None, "qc": None, "s/turn0": [("s", 0)], "s/turn1": [("s", 1)]}
    )
    assert {sid: _sources(r) for sid, r in gold.items()} == expected
    assert (report.rows_in, report.rows_out, report.dropped) == (4, len(expected), {})
    assert report.counters["gold_source_samples"] == 4
    assert report.counters["gold_rows_reshaped"] == sum(v is not None for v in expected.values())

    folder = export_job.release_dir(run)
    side = pq.read_table(f"{folder}/_provenance/alpha").to_pylist()
    # merged, the red questions are one sample; kept apart (split leaves them so) they share the red
    # image verbatim, and the release keeps one of them (qa, the smallest id)
    released = expected if turns == "merge" else {k: v for k, v in expected.items() if k not in ("qb", "qc")}
    assert {r["sample_id"]: _sources(r) for r in side} == released
    assert report.counters["release_left_out_duplicate"] == len(expected) - len(released)
    with open(f"{folder}/README.md", encoding="utf-8") as card:
        assert f"export.turns: {turns}" in card.read()
    for axis in GOLD_RATING_AXES:
        assert all(r[f"{axis}_ratings"] is None for r in gold.values())  # no turn_ratings table
