"""One sample per step of a GUI trajectory (`export.gui_per_step`), on a real Spark session."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from etl.schema import GOLD_RATING_AXES, GOLD_SAMPLES
from etl.sources.gui_trajectory import NEXT_STEP_PROMPT
from etl.stages.gui_steps import STEP_PROMPT, gui_prompts, gui_step_samples, step_calls
from tests.conftest import png_bytes

CALLS = [
    "open_app('Clock')",
    "click(x=0.25, y=0.75)",
    "<think>\nThe alarm list is below.\n</think>\n<code>\nswipe(from_coord=[0.5, 0.8], to_coord=[0.5, 0.2])\n</code>",
    "long_press(x=0.5, y=0.4)",
    "type('07:30')",
    "press(keys='enter')",
    "final_answer('done')",
]


def _row(sample_id, subset, images, texts, relevance=None):
    row = {name: None for name in GOLD_SAMPLES.fieldNames()}
    row.update(
        sample_id=sample_id,
        subset=subset,
        source=subset,
        category="Grounding & Counting",
        contaminated=False,
        images=images,
        texts=texts,
        relevance_ratings=relevance,
        relevance_min=min(relevance) if relevance else None,
    )
    return row


def test_a_seven_step_trajectory_gives_seven_samples_with_their_screenshots(spark):
    shots = [{"bytes": png_bytes((20, 16), (30 * i, 10, 200)), "path": f"shots/{i}.png"} for i in range(7)]
    texts = [
        {"user": "Set an alarm for 7:30" if i == 0 else NEXT_STEP_PROMPT, "assistant": c} for i, c in enumerate(CALLS)
    ]
    gold = spark.createDataFrame(
        [
            _row("traj", "gui_mobile", shots, texts, relevance=[1, 2, 3, 4, 5, 4, 3]),
            _row("vqa", "photos", shots[:1], [{"user": "What colour?", "assistant": "Blue."}]),
        ],
        GOLD_SAMPLES,
    )
    out = {r["sample_id"]: r for r in gui_step_samples(gold, {"gui_mobile": "MOBILE PROMPT"}).collect()}

    assert sorted(out) == sorted(["vqa", *[f"traj/step{i}" for i in range(7)]])
    assert out["vqa"]["texts"][0]["assistant"] == "Blue." and len(out["vqa"]["images"]) == 1
    assert out["vqa"]["turn_sources"] is None  # not a trajectory: the silver sample as it is
    for i in range(7):
        step = out[f"traj/step{i}"]
        assert [(img["bytes"], img["path"]) for img in step["images"]] == [(shots[i]["bytes"], f"shots/{i}.png")]
        [turn] = step["texts"]
        assert turn["assistant"] == CALLS[i]  # the action as the answer, reasoning included
        assert turn["user"].startswith("MOBILE PROMPT\n\n")
        assert "Instruction: Set an alarm for 7:30" in turn["user"]
        assert step["relevance_ratings"] == [[1, 2, 3, 4, 5, 4, 3][i]]
        assert step["relevance_min"] == [1, 2, 3, 4, 5, 4, 3][i]
        assert step["subset"] == "gui_mobile" and step["contaminated"] is False
        assert [t.asDict() for t in step["turn_sources"]] == [{"sample_id": "traj", "turn_index": i}]
        for axis in GOLD_RATING_AXES:
            if axis != "relevance":
                assert step[f"{axis}_ratings"] is None
    assert out["traj/step0"]["texts"][0]["user"].endswith("Previous actions:\nNone")
    assert out["traj/step3"]["texts"][0]["user"].endswith(
        "Previous actions:\nStep 1: open_app('Clock')\nStep 2: click(x=0.25, y=0.75)\n"
        "Step 3: swipe(from_coord=[0.5, 0.8], to_coord=[0.5, 0.2])"
    )


def test_step_calls_and_the_configured_prompts():
    assert step_calls("click(x=0.5, y=0.5)\ntype(text='a')") == "click(x=0.5, y=0.5); type(text='a')"
    assert step_calls("<code>\npress(keys='enter')\n</code>") == "press(keys='enter')"
    assert step_calls("The answer is blue.") is None
    prompts = gui_prompts()
    assert prompts["gui_mobile"].startswith("You are a GUI agent operating a phone")
    assert "open_app(app_name: str)" in prompts["gui_mobile"] and "open_app" not in prompts["gui_desktop"]
    assert "{instruction}" in STEP_PROMPT and "{history}" in STEP_PROMPT


def test_export_option_writes_the_steps_to_gold_and_the_release(spark, tmp_path):
    import hashlib

    from etl import tables
    from etl.config import load_config
    from etl.jobs import export as export_job
    from etl.runs import PipelineRun
    from etl.schema import CONTAMINATION_HITS, NEAR_DUPLICATE_CLUSTERS, SAMPLES

    config = load_config(
        overrides=[f"lakehouse={tmp_path / 'lake'}", "mlflow.enabled=false", "export.gui_per_step=true"]
    )
    shots = []
    for i in range(4):
        data = png_bytes((20, 16), (80 * i, 10, 200))
        shots.append(
            {
                "bytes": data,
                "path": f"s/{i}.png",
                "image_id": hashlib.sha256(data).hexdigest(),
                "width": 20,
                "height": 16,
            }
        )

    def sample(sid, subset, images, turns):
        return {
            "sample_id": sid,
            "subset": subset,
            "category": "Grounding & Counting",
            "source": subset,
            "images": images,
            "texts": [{"user": u, "assistant": a} for u, a in turns],
            "source_ref": None,
        }

    calls = ["click(x=0.1, y=0.2)", "type('hello')", "final_answer('done')"]
    silver = [
        sample(
            "t",
            "gui_desktop",
            shots[:3],
            [("Say hello", calls[0]), (NEXT_STEP_PROMPT, calls[1]), (NEXT_STEP_PROMPT, calls[2])],
        ),
        sample("q", "photos", shots[3:], [("What colour?", "Blue.")]),
        # z reuses t's first screenshot: one duplicate cluster, whose representative is the trajectory
        # t (t < z), so all three steps are released (not t/step0 alone) and z is left out
        sample("z", "photos", shots[:1], [("What is on the screen?", "A form.")]),
    ]
    run = PipelineRun(spark, config, "gui-steps-test")
    commit = run.commit("fixture")
    for name, rows, schema in [
        ("silver_samples", silver, SAMPLES),
        ("contamination_hits", [], CONTAMINATION_HITS),
        ("near_duplicate_clusters", [], NEAR_DUPLICATE_CLUSTERS),
    ]:
        tables.append(spark, run.table(name), spark.createDataFrame(rows, schema), commit, schema)
    export_job.run(run)

    gold = {r["sample_id"]: r for r in tables.read(spark, run.table("gold_samples")).collect()}
    assert sorted(gold) == ["q", "t/step0", "t/step1", "t/step2", "z"]
    for i in range(3):
        step = gold[f"t/step{i}"]
        assert [img["path"] for img in step["images"]] == [f"s/{i}.png"]
        assert step["texts"][0]["assistant"] == calls[i]
        assert step["texts"][0]["user"].startswith(gui_prompts()["gui_desktop"])
        assert step["dup_cluster_id"] == gold["z"]["dup_cluster_id"] == shots[0]["image_id"]
    assert gold["q"]["texts"][0]["assistant"] == "Blue." and gold["q"]["dup_cluster_id"] is None
    folder = Path(export_job.release_dir(run))
    # one config per subset beside the shuffled `default` (FineVision's layout, docs/release.md)
    configs = sorted({p.parent.name for p in folder.glob("*/*.parquet")})
    assert configs == ["default", "gui_desktop", "photos"]

    def released(config):
        return [
            r["sample_id"]
            for p in sorted(folder.glob(f"_provenance/{config}/*.parquet"))
            for r in pq.read_table(p).to_pylist()
        ]

    assert released("gui_desktop") == ["t/step0", "t/step1", "t/step2"]  # the 3 steps
    assert sum(pq.read_metadata(p).num_rows for p in folder.glob("gui_desktop/*.parquet")) == 3
    assert released("photos") == ["q"]  # z: a duplicate of the trajectory t
    assert sorted(released("default")) == ["q", "t/step0", "t/step1", "t/step2"]


def test_the_release_keeps_or_leaves_out_a_trajectorys_steps_together(spark):
    from etl.stages.export import release_exclusions

    def row(sample_id, cluster, contaminated=False):
        return _row(sample_id, "gui_mobile", [], []) | {"dup_cluster_id": cluster, "contaminated": contaminated}

    gold = spark.createDataFrame(
        [
            # cluster c: the trajectory t is the representative (t < z): every step stays, not t/step0 alone
            *[row(f"t/step{i}", "c") for i in range(3)],
            row("z", "c"),
            # cluster d: q is the representative (q < u): every step of u goes
            *[row(f"u/step{i}", "d") for i in range(2)],
            row("q", "d"),
            # cluster e: the contaminated trajectory a is no representative, so the sample b is
            *[row(f"a/step{i}", "e", contaminated=True) for i in range(2)],
            row("b", "e"),
            # a sample id with `/step` not at its end is a sample of its own
            row("k/step1x", "f"),
            row("k/step2x", "f"),
        ],
        GOLD_SAMPLES,
    )
    excluded = {r["sample_id"]: r["excluded"] for r in release_exclusions(gold, False, False).collect()}
    assert excluded == {
        "t/step0": None,
        "t/step1": None,
        "t/step2": None,
        "z": "duplicate",
        "u/step0": "duplicate",
        "u/step1": "duplicate",
        "q": None,
        "a/step0": "contaminated",
        "a/step1": "contaminated",
        "b": None,
        "k/step1x": None,
        "k/step2x": "duplicate",
    }
