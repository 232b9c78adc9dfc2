"""`finevision rate` end to end on a tiny lakehouse: the real SmolLM2-135M judge through Spark,
and a run killed half-way that the next run completes without duplicates or re-asking."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pyspark.sql import Row
from pyspark.sql import functions as F

from etl import tables
from etl.config import PROJECT_ROOT
from etl.jobs import rate as rate_job
from etl.runs import PipelineRun
from etl.schema import SAMPLES
from etl.specs import configured_judges
from etl.stages.export import rating_columns
from etl.stages.rate import RATING_KEYS, current_ratings
from tests.conftest import png_bytes
from tests.judge_server import ScriptedJudge
from udfs.judge import NO_VLM_JUDGE, load_prompts


def write_silver(spark, config, rows) -> None:
    frame = spark.createDataFrame(
        [
            Row(
                sample_id=sid,
                subset=subset,
                category="General VQA",
                source=subset,
                images=[
                    {"bytes": b, "path": None, "image_id": f"img-{sid}-{i}", "width": 32, "height": 24}
                    for i, b in enumerate(images)
                ],
                texts=[{"user": q, "assistant": a} for q, a in turns],
                source_ref=None,
            )
            for sid, subset, images, turns in rows
        ],
        SAMPLES,
    )
    ref = tables.TableRef.of(config, "silver_samples")
    tables.merge_insert(spark, ref, frame, ["sample_id"], tables.Commit("test", "clean", "-", "-"), SAMPLES)


def test_smollm2_rates_real_turns(spark, make_config):
    config = make_config(**{"mlflow__enabled": "false", "rate__max_turns_per_subset": "null", "rate__partitions": "1"})
    write_silver(
        spark,
        config,
        [
            (
                "photo",
                "photos",
                [png_bytes()],
                [
                    ("What colour is the car?", "The car is red."),
                    ("How many dogs are in the picture?", "The weather in Paris is nice today."),
                ],
            ),
            ("sum", "arithmetic", [], [("What is 12 + 30?", "12 + 30 = 42.")]),
        ],
    )
    run = PipelineRun(spark, config, "rate")
    rate_job.run(run)
    report = run.reports[-1]
    ratings = tables.read(spark, run.table("turn_ratings")).collect()

    prompts = load_prompts(PROJECT_ROOT / "conf" / "prompts" / "judge")
    assert len(ratings) == 3 * 4 and len({tuple(r[k] for k in RATING_KEYS) for r in ratings}) == 12
    text = [r for r in ratings if r["axis"] != "image_correspondence"]
    assert {r["judge_model"] for r in text} == {"SmolLM2-135M-Instruct-Q4_1"}
    assert all(r["prompt_hash"] == prompts[r["axis"]].prompt_hash for r in ratings)
    for r in text:  # a score with its expectation, or no score and the reason: never both, never neither
        if r["score"] is not None:
            assert 1 <= r["score"] <= 5 and 1 <= r["expected_score"] <= 5 and r["error"] is None
        else:
            assert r["expected_score"] is None and r["error"].startswith("unparsable judge output")
    assert report.rows_out == sum(r["score"] is not None for r in text) > 0
    image = [r for r in ratings if r["axis"] == "image_correspondence"]
    assert [(r["score"], r["judge_model"], r["error"]) for r in image] == [(None, "none", NO_VLM_JUDGE)] * 3

    distribution = tables.read(spark, run.table("rating_distribution")).filter("subset = '*'").collect()
    for axis in {r["axis"] for r in text if r["score"] is not None}:
        shares = [d["share"] for d in distribution if d["axis"] == axis]
        assert sum(shares) == pytest.approx(1.0, abs=1e-6)

    silver = tables.read(spark, run.table("silver_samples"))
    judges = configured_judges(config)
    ratings = current_ratings(tables.read(spark, run.table("turn_ratings")), judges)
    arrays = {r["sample_id"]: r for r in rating_columns(silver, ratings).collect()}
    scored = {(r["sample_id"], r["turn_index"]): r["score"] for r in text if r["axis"] == "relevance"}

    def expected(sample_id, turns):  # one entry per turn; null when the sample has no score on the axis at all
        scores = [scored[sample_id, turn] for turn in range(turns)]
        return scores if any(score is not None for score in scores) else None

    assert arrays["photo"]["relevance_ratings"] == expected("photo", 2)
    assert arrays["sum"]["relevance_ratings"] == expected("sum", 1)


def _merges_committed(table: Path) -> int:
    """MERGE commits in the table's Delta log (creating the table and its constraint come first)."""
    log = table / "_delta_log"
    commits = [p.read_text() for p in log.glob("*.json")] if log.exists() else []
    return sum('"operation":"MERGE"' in c for c in commits)


def test_killed_run_resumes_without_duplicates(spark, make_config, tmp_path):
    turns = 12
    settings = {
        "mlflow__enabled": "false",
        "rate__max_turns_per_subset": "null",
        "rate__partitions": "1",
        "rate__commit_rows": "3",
        "rate__axes": "[relevance]",
        "rate__text_judge": "qwen3_32b",
        "rate__judges__qwen3_32b__max_retries": "0",
        "rate__judges__qwen3_32b__max_concurrency": "1",
    }
    with ScriptedJudge(slow_s=0.3) as server:
        settings["rate__judges__qwen3_32b__base_url"] = server.base_url
        config = make_config(**settings)
        write_silver(
            spark, config, [(f"s{i:02d}", "vqa", [], [(f"[slow] question {i}?", f"answer {i}")]) for i in range(turns)]
        )
        sets = [arg for key, value in settings.items() for arg in ("--set", f"{key.replace('__', '.')}={value}")]
        table = Path(config.lakehouse) / "turn_ratings"
        log_file = (tmp_path / "rate.log").open("w")
        process = subprocess.Popen(
            [sys.executable, "-m", "etl.cli", "--lakehouse", config.lakehouse, *sets, "rate"],
            cwd=PROJECT_ROOT,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=os.environ | {"PYSPARK_PYTHON": sys.executable},
        )
        try:
            deadline = time.monotonic() + 400
            while not _merges_committed(table):
                assert process.poll() is None, (tmp_path / "rate.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "no chunk committed in time"
                time.sleep(0.2)
        finally:
            os.killpg(process.pid, signal.SIGKILL)  # the CLI and its Spark JVM, mid-run
            process.wait()
        committed = tables.read(spark, tables.TableRef.of(config, "turn_ratings")).collect()
        assert 0 < len(committed) < turns, "the kill should land between chunks"
        asked_before = dict(server.attempts)

        # the re-run may commit in bigger chunks: what it rates depends only on what is committed
        resumed = PipelineRun(spark, make_config(**settings | {"rate__commit_rows": str(turns)}), "rate")
        rate_job.run(resumed)
        asked_after = dict(server.attempts)

    ratings = tables.read(spark, tables.TableRef.of(config, "turn_ratings"))
    keys = ratings.groupBy(*RATING_KEYS).count()
    assert ratings.count() == turns and keys.filter(F.col("count") > 1).count() == 0
    assert ratings.filter(F.col("score").isNull()).count() == 0 and {r["score"] for r in ratings.collect()} == {3}
    report = resumed.reports[-1]
    assert (report.rows_in, report.counters["already_rated"]) == (turns - len(committed), len(committed))
    # the second run asked the judge exactly once about every turn the first run had not committed
    done = {f"question {int(r['sample_id'][1:])}?" for r in committed}
    for prompt, n in asked_after.items():
        question = prompt.split("[slow] ")[1].split("\n")[0]
        assert n - asked_before.get(prompt, 0) == (0 if question in done else 1), question
    runs = tables.read(spark, tables.TableRef.of(config, "pipeline_runs")).filter("stage = 'rate'").collect()
    assert [json.dumps(r["status"]) for r in runs if r["run_id"] == resumed.run_id] == ['"succeeded"']


def _hidden(table: Path) -> list[tuple[Path, Path]]:
    """Rename the table's data files (not its log) so that any read of them fails."""
    moved = []
    for data in table.rglob("*.parquet"):
        if "_delta_log" not in data.parts:
            hidden = data.with_name(data.name + ".hidden")
            data.rename(hidden)
            moved.append((data, hidden))
    return moved


def test_chunks_read_their_work_list_not_silver(spark, make_config, monkeypatch):
    """Silver is read while the work list is made; the chunks then rate with silver's files gone
    (the old design re-joined silver in every chunk), text and image axes alike."""
    settings = {
        "mlflow__enabled": "false",
        "rate__max_turns_per_subset": "null",
        "rate__partitions": "1",
        "rate__commit_rows": "6",
        "rate__axes": "[relevance, image_correspondence]",
        "rate__text_judge": "qwen3_32b",
        "rate__image_judge": "qwen2_5_vl_32b",
    }
    colours = {f"s{i}": png_bytes(color=(40 * i, 20, 200 - 30 * i)) for i in range(3)}  # 12 requests: 2 chunks
    chunks = []
    real_rate_chunk = rate_job._rate_chunk

    def rate_chunk_without_silver(run, report, rated, id_range):
        moved = _hidden(Path(config.lakehouse) / "silver_samples")
        assert moved
        try:
            real_rate_chunk(run, report, rated, id_range)  # the judges run and the chunk commits here
        finally:
            for data, hidden in moved:
                hidden.rename(data)
        chunks.append(report.output_versions["turn_ratings"])

    with ScriptedJudge() as server:
        for judge in ("qwen3_32b", "qwen2_5_vl_32b"):
            settings[f"rate__judges__{judge}__base_url"] = server.base_url
            settings[f"rate__judges__{judge}__max_retries"] = "0"
        config = make_config(**settings)
        write_silver(
            spark,
            config,
            [
                (
                    sid,
                    "vqa",
                    [image],
                    [(f"[image] What is in picture {sid}?", "A colour."), (f"[good:2] {sid} again?", "Yes.")],
                )
                for sid, image in colours.items()
            ],
        )
        monkeypatch.setattr(rate_job, "_rate_chunk", rate_chunk_without_silver)
        run = PipelineRun(spark, config, "rate")
        rate_job.run(run)
        images_sent = dict(server.images)

    assert len(chunks) >= 2
    ratings = tables.read(spark, run.table("turn_ratings")).collect()
    assert len(ratings) == 3 * 2 * 2 and run.reports[-1].rows_in == 12
    image_axis = {(r["sample_id"], r["turn_index"]): r["score"] for r in ratings if r["axis"] == "image_correspondence"}
    assert image_axis == {(sid, turn): score for sid in colours for turn, score in [(0, 5), (1, 2)]}
    relevance = {(r["sample_id"], r["turn_index"]): r["score"] for r in ratings if r["axis"] == "relevance"}
    assert relevance == {(sid, turn): score for sid in colours for turn, score in [(0, None), (1, 2)]}
    for sid, image in colours.items():  # each sample's own image reached the VLM judge, intact
        assert [sent for prompt, sent in images_sent.items() if f"picture {sid}?" in prompt] == [[image]]


def test_each_chunk_merges_into_its_own_range_of_turn_ratings(spark, make_config, monkeypatch):
    """Chunks are ranges of sample_id and each chunk's MERGE names its range, so Delta skips the
    files the earlier chunks wrote: here they are renamed away while each chunk commits, and the
    commits still succeed. (The old design hashed samples into chunks and every commit read the
    whole of turn_ratings: quadratic in the corpus.)"""
    settings = {
        "mlflow__enabled": "false",
        "rate__max_turns_per_subset": "null",
        "rate__partitions": "1",
        "rate__commit_rows": "4",
        "rate__axes": "[relevance]",
        "rate__text_judge": "qwen3_32b",
    }
    ids = [f"{i * 0x0F0F0F0F:08x}" + "0" * 24 for i in range(1, 17)]  # hex ids spread over the range
    hidden_per_chunk = []
    real_rate_chunk = rate_job._rate_chunk

    def rate_chunk_with_earlier_chunks_hidden(run, report, rated, id_range):
        moved = _hidden(Path(config.lakehouse) / "turn_ratings")
        hidden_per_chunk.append(len(moved))
        try:
            real_rate_chunk(run, report, rated, id_range)
        finally:
            for data, hidden in moved:
                hidden.rename(data)

    with ScriptedJudge() as server:
        settings["rate__judges__qwen3_32b__base_url"] = server.base_url
        config = make_config(**settings)
        write_silver(spark, config, [(sid, "vqa", [], [(f"[good:3] {sid}?", "Yes.")]) for sid in ids])
        monkeypatch.setattr(rate_job, "_rate_chunk", rate_chunk_with_earlier_chunks_hidden)
        run = PipelineRun(spark, config, "rate")
        rate_job.run(run)

    assert len(hidden_per_chunk) >= 3 and hidden_per_chunk[0] == 0 and all(n > 0 for n in hidden_per_chunk[1:])
    ratings = tables.read(spark, run.table("turn_ratings")).collect()
    assert sorted(r["sample_id"] for r in ratings) == ids and {r["score"] for r in ratings} == {3}


def test_sample_id_ranges_partition_ids_into_ordered_ranges(spark):
    from etl.stages.rate import sample_id_range

    hex_ids = [f"{(i * 2654435761) % 2**32:08x}" + "ab" * 12 for i in range(200)]
    other_ids = ["s1", "photo", "ZZ"]  # not hex: still exactly one chunk each
    frame = spark.createDataFrame([(sid,) for sid in hex_ids + other_ids], "sample_id string")
    rows = frame.select("sample_id", sample_id_range(5).alias("chunk")).collect()
    chunk_of = {r["sample_id"]: r["chunk"] for r in rows}
    assert len(rows) == len(hex_ids) + len(other_ids) and all(0 <= c < 5 for c in chunk_of.values())
    by_chunk = {c: sorted(s for s in hex_ids if chunk_of[s] == c) for c in range(5)}
    assert all(len(ids) > 20 for ids in by_chunk.values())  # about equal shares
    for lower, upper in zip(range(4), range(1, 5), strict=True):  # ranges, in order, disjoint
        assert by_chunk[lower][-1] < by_chunk[upper][0]
