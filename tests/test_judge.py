"""Judges: score extraction, prompts, the chat-completions backend against a real loopback HTTP
server through Spark, and the ratings arrays of the gold export."""

from __future__ import annotations

import hashlib

import pytest
from pyspark.sql import Row

from etl.schema import SAMPLES, TURN_RATINGS
from etl.stages.export import rating_columns
from etl.stages.rate import AxisJudge, current_ratings, pending_requests, pending_work, rate_turns, turn_requests
from tests.conftest import png_bytes
from tests.judge_server import ScriptedJudge
from udfs.judge import (
    NO_IMAGE,
    NO_JUDGE_MODEL,
    NO_VLM_JUDGE,
    JudgePrompt,
    JudgeRequest,
    JudgeSpec,
    digit_expectation,
    load_prompts,
    openai_expectation,
    parse_score,
    prompt_hash,
)


@pytest.mark.parametrize(
    "text, score",
    [
        ("4", 4),
        (" 5\n", 5),
        ("**3**", 3),
        ("Score: 2", 2),
        ("4/5", 4),
        ("4 out of 5", 4),
        ("The answer is 1.", 1),
        ("<think>maybe 2 or 3</think>5", 5),
        ("4\nThe answer is clear.", 4),
    ],
)
def test_parse_score_reads_one_score(text, score):
    assert parse_score(text) == (score, None)


@pytest.mark.parametrize(
    "text, reason",
    [
        ("", "no score"),
        ("good answer", "no score"),
        ("3 or 4", "several numbers"),
        ("1. The answer is 2.", "several numbers"),
        ("7", "7 is not a score"),
        ("0", "0 is not a score"),
        ("4.5", "4.5 is not a score"),
        (None, "empty"),
    ],
)
def test_parse_score_never_guesses(text, reason):
    score, error = parse_score(text)
    assert score is None and error.startswith("unparsable judge output") and reason in error


def test_expected_score_over_the_five_digits():
    assert digit_expectation({"4": 0.5, "5": 0.5}) == pytest.approx(4.5)
    assert digit_expectation({"1": 0.2, "3": 0.2, "x": 0.6}) == pytest.approx(2.0)  # non-digits do not count
    assert digit_expectation({}) is None
    content = [
        {"token": "Score", "logprob": -0.1, "top_logprobs": []},
        {
            "token": " 4",
            "logprob": -0.5,
            "top_logprobs": [
                {"token": " 4", "logprob": -0.5108256},
                {"token": "4", "logprob": -2.302585},
                {"token": " 2", "logprob": -1.6094379},
                {"token": "a", "logprob": -3.0},
            ],
        },
    ]
    # " 4" and "4" add up: 0.6 + 0.1 on 4, 0.2 on 2 -> (0.7 * 4 + 0.2 * 2) / 0.9
    assert openai_expectation(content) == pytest.approx((0.7 * 4 + 0.2 * 2) / 0.9, abs=1e-5)


def test_prompts_are_identified_by_their_text(tmp_path):
    shipped = load_prompts("conf/prompts/judge")
    assert set(shipped) == {"formatting", "relevance", "visual_dependency", "image_correspondence"}
    text = "Rate {question} / {answer}"
    (tmp_path / "relevance.md").write_text(text)
    prompt = load_prompts(tmp_path, ["relevance"])["relevance"]
    assert prompt.prompt_hash == hashlib.sha256(text.encode()).hexdigest()[:16] == prompt_hash(text)
    (tmp_path / "relevance.md").write_text(text + " ")
    assert load_prompts(tmp_path, ["relevance"])["relevance"].prompt_hash != prompt.prompt_hash
    # a placeholder inside the turn's text stays text
    assert prompt.render("what is {answer}?", "42") == "Rate what is {answer}? / 42"
    (tmp_path / "formatting.md").write_text("Rate {question}")
    with pytest.raises(ValueError, match=r"formatting prompt needs the placeholders \['\{answer\}'\]"):
        load_prompts(tmp_path, ["formatting"])


def _samples(spark, rows):
    return spark.createDataFrame(
        [
            Row(
                sample_id=sid,
                subset=subset,
                category="General VQA",
                source=subset,
                images=[
                    {"bytes": b, "path": None, "image_id": hashlib.sha256(b).hexdigest(), "width": 32, "height": 24}
                    for b in images
                ],
                texts=[{"user": q, "assistant": a} for q, a in turns],
                source_ref=None,
            )
            for sid, subset, images, turns in rows
        ],
        SAMPLES,
    )


def _endpoint(base_url, **overrides) -> JudgeSpec:
    settings = dict(
        backend="openai",
        judge_model="scripted-judge",
        base_url=base_url,
        max_concurrency=4,
        timeout_s=0.5,
        max_retries=2,
        backoff_s=0.01,
    )
    return JudgeSpec(**(settings | overrides))


def test_endpoint_judge_through_spark(spark):
    red, blue = png_bytes((32, 24), (255, 0, 0)), png_bytes((40, 30), (0, 0, 255))
    samples = _samples(
        spark,
        [
            ("s1", "vqa", [red], [("[good:4] What colour?", "Red."), ("[garbage] And now?", "Still red.")]),
            ("s2", "vqa", [red, blue], [("[stall] Which is bigger?", "Blue."), ("[429x2] Count?", "Two.")]),
            ("s3", "chat", [], [("[500] Hi?", "Hello."), ("[500x1] Sum 2+2?", "4")]),
            ("s4", "vqa", [blue], [("[image] What is shown?", "A blue square.")]),
        ],
    )
    prompts = {
        "relevance": JudgePrompt("relevance", "Q: {question}\nA: {answer}\nScore 1-5."),
        "image_correspondence": JudgePrompt("image_correspondence", "Q: {question}\nScore 1-5."),
    }
    with ScriptedJudge(stall_s=3.0) as server:
        assignments = [
            AxisJudge("relevance", prompts["relevance"], _endpoint(server.base_url)),
            AxisJudge(
                "image_correspondence",
                prompts["image_correspondence"],
                _endpoint(server.base_url, judge_model="scripted-vlm", vision=True),
            ),
        ]
        requests = turn_requests(samples, assignments)
        work = pending_work(samples, requests, assignments)
        out = rate_turns(work, assignments, "run-1", max_text_chars=1000, partitions=2)
        assert out.schema == TURN_RATINGS
        rows = {(r["sample_id"], r["turn_index"], r["axis"]): r for r in out.collect()}
        attempts = dict(server.attempts)

    assert len(rows) == 7 * 2  # every turn on both axes, exactly once
    rel = {key[:2]: row for key, row in rows.items() if key[2] == "relevance"}
    assert all(
        r["judge_model"] == "scripted-judge" and r["prompt_hash"] == prompts["relevance"].prompt_hash
        for r in rel.values()
    )
    assert (rel["s1", 0]["score"], rel["s1", 0]["error"]) == (4, None)
    # the server put 0.6 on "4", 0.3 on " 5" and 0.1 on a non-digit
    assert rel["s1", 0]["expected_score"] == pytest.approx((0.6 * 4 + 0.3 * 5) / 0.9, abs=1e-5)
    assert rel["s1", 1]["score"] is None and rel["s1", 1]["error"].startswith("unparsable judge output: no score")
    assert rel["s2", 0]["score"] is None and rel["s2", 0]["error"] == "request failed: timeout after 0.5s (3 attempts)"
    assert rel["s2", 1]["score"] == 5 and rel["s2", 1]["error"] is None  # two 429s, then an answer
    assert rel["s3", 0]["score"] is None and rel["s3", 0]["error"].startswith("request failed: HTTP 500")
    assert rel["s3", 1]["score"] == 5
    assert all(r["run_id"] == "run-1" for r in rows.values())

    def asked(marker):
        return next(n for text, n in attempts.items() if marker in text and text.startswith("Q:") and "A:" in text)

    assert asked("[429x2]") == 3 and asked("[500]") == 3 and asked("[500x1]") == 2 and asked("[good:4]") == 1

    img = {key[:2]: row for key, row in rows.items() if key[2] == "image_correspondence"}
    assert img["s3", 0]["score"] is None and img["s3", 0]["error"] == NO_IMAGE  # a text-only sample
    assert img["s4", 0]["score"] == 5 and img["s4", 0]["judge_model"] == "scripted-vlm"
    sent = next(images for text, images in server.images.items() if "[image]" in text)
    assert sent == [blue]  # the image arrived intact, as a data URL


def test_image_axis_without_a_vlm_stays_null(spark):
    samples = _samples(spark, [("s1", "vqa", [png_bytes()], [("What colour?", "Red.")])])
    assignments = [AxisJudge("image_correspondence", JudgePrompt("image_correspondence", "{question}"), None)]
    work = pending_work(samples, turn_requests(samples, assignments), assignments)
    assert work.first()["images"] is None  # no judge looks at the image: its bytes are not carried
    rows = rate_turns(work, assignments, "r", 100).collect()
    assert [(r["score"], r["judge_model"], r["error"]) for r in rows] == [(None, "none", NO_VLM_JUDGE)]


def test_endpoint_rejects_images_for_a_text_judge_and_bad_requests():
    from udfs.judge_backends import get_backend

    with ScriptedJudge() as server:
        backend = get_backend(_endpoint(server.base_url, judge_model="text-only"))
        verdicts = backend.rate([JudgeRequest("[image] x", (png_bytes(),)), JudgeRequest("[good:2] y")])
        assert verdicts[0].error == "judge text-only is not a vision model" and verdicts[1].score == 2
        missing = get_backend(_endpoint(server.base_url.replace("/v1", "/nowhere")))
        assert missing.rate([JudgeRequest("[good:2] y")])[0].error.startswith("rejected: HTTP 404")


def _ratings(spark, rows):
    return spark.createDataFrame(
        [
            Row(
                sample_id=s,
                turn_index=t,
                axis=a,
                score=sc,
                expected_score=None,
                judge_model=j,
                prompt_hash=p,
                error=None if sc is not None else e,
                run_id="r",
            )
            for s, t, a, sc, j, p, e in rows
        ],
        TURN_RATINGS,
    )


def test_pending_requests_retries_failed_requests_only(spark):
    samples = _samples(spark, [("s1", "vqa", [], [("q0", "a0"), ("q1", "a1"), ("q2", "a2"), ("q3", "a3")])])
    assignments = [
        AxisJudge(
            "relevance", JudgePrompt("relevance", "{question}{answer}"), JudgeSpec("openai", "j", base_url="http://x")
        )
    ]
    h = assignments[0].prompt_hash
    ratings = _ratings(
        spark,
        [
            ("s1", 0, "relevance", 4, "j", h, None),
            ("s1", 1, "relevance", None, "j", h, 'unparsable judge output: no score in "x"'),
            ("s1", 2, "relevance", None, "j", h, "request failed: HTTP 503: busy (5 attempts)"),
            ("s1", 3, "relevance", 5, "other-judge", h, None),
        ],
    )
    pending = pending_requests(turn_requests(samples, assignments), ratings)
    assert sorted(r["turn_index"] for r in pending.collect()) == [2, 3]
    capped = turn_requests(samples, assignments, max_turns_per_subset=2)
    assert (
        capped.count() == 2
        and capped.collect() == turn_requests(samples, assignments, max_turns_per_subset=2).collect()
    )


def test_rating_columns_align_with_texts_for_the_configured_judges(spark):
    samples = _samples(
        spark,
        [
            ("s1", "vqa", [], [("q0", "a0"), ("q1", "a1"), ("q2", "a2")]),
            ("s2", "vqa", [], [("q0", "a0")]),
            ("s3", "vqa", [], [("q0", "a0"), ("q1", "a1")]),
        ],
    )
    ratings = _ratings(
        spark,
        [
            ("s1", 2, "formatting", 3, "j", "p", None),
            ("s1", 0, "formatting", 5, "j", "p", None),
            ("s1", 1, "formatting", 4, "j", "p", None),
            ("s1", 0, "relevance", 2, "j", "p", None),
            ("s1", 2, "relevance", 4, "j", "p", None),  # turn 1 unrated
            ("s1", 1, "relevance", None, "j", "p", "unparsable judge output: no score"),
            ("s2", 0, "formatting", 1, "old-judge", "p", None),  # not the chosen judge
            ("s2", 0, "formatting", 4, "j", "p", None),
            ("s3", 0, "visual_dependency", 2, "j", "q", None),
            ("s3", 1, "visual_dependency", 1, "j", "q", None),
        ],
    )
    judges = {"formatting": ("j", "p"), "relevance": ("j", "p"), "visual_dependency": ("j", "q")}
    got = {r["sample_id"]: r.asDict() for r in rating_columns(samples, current_ratings(ratings, judges)).collect()}
    assert got["s1"]["formatting_ratings"] == [5, 4, 3] and got["s1"]["formatting_min"] == 3
    assert got["s1"]["relevance_ratings"] == [2, None, 4] and got["s1"]["relevance_min"] is None
    assert got["s1"]["image_correspondence_ratings"] is None and got["s1"]["image_correspondence_min"] is None
    assert got["s2"]["formatting_ratings"] == [4] and got["s2"]["formatting_min"] == 4
    assert got["s3"]["visual_dependency_ratings"] == [2, 1] and got["s3"]["visual_dependency_min"] == 1
    assert got["s3"]["formatting_ratings"] is None  # no rating on that axis: null, not a list of nulls


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["rate.image_judge=qwen3_32b", "rate.judges.qwen3_32b.base_url=http://vllm:8000/v1"],
            "image_judge 'qwen3_32b' is not a vision judge",
        ),
        (["rate.text_judge=qwen3_32b"], "text_judge 'qwen3_32b': backend openai needs base_url"),
        (["rate.text_judge=gpt"], "text_judge 'gpt' is not one of the judges"),
        (["rate.axes=[beauty]"], "rate.axes.0: Input should be 'formatting'"),
    ],
)
def test_judge_configuration_errors_name_the_key(overrides, message):
    from etl.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=message):
        load_config(overrides=overrides)
    production = load_config(
        overrides=[
            "rate.text_judge=qwen3_32b",
            "rate.image_judge=qwen2_5_vl_32b",
            "rate.judges.qwen3_32b.base_url=http://vllm:8000/v1",
            "rate.judges.qwen2_5_vl_32b.base_url=http://vllm:8001/v1",
        ]
    ).rate
    assert (production.judges["qwen3_32b"].model, production.judges["qwen2_5_vl_32b"].model) == (
        "Qwen/Qwen3-32B",
        "Qwen/Qwen2.5-VL-32B-Instruct",
    )


def test_configured_judges_name_what_the_rate_job_records_without_converting_a_model(monkeypatch, tmp_path):
    from etl import specs
    from etl.config import load_config

    # a checkpoint folder is given, so axis_judges itself converts nothing either
    config = load_config(overrides=[f"rate.judges.smollm2_135m.model_path={tmp_path}"])
    recorded = {a.axis: (a.judge_model, a.prompt_hash) for a in specs.axis_judges(config)}
    assert specs.configured_judges(config) == recorded
    assert recorded["image_correspondence"][0] == NO_JUDGE_MODEL  # no image judge by default

    def no_conversion(*args):
        raise AssertionError("the export and analytics must not convert a judge to learn its name")

    monkeypatch.setattr(specs, "prepare_gguf_model", no_conversion)
    default = load_config()
    assert specs.configured_judges(default)["relevance"][0] == default.rate.judges["smollm2_135m"].model
    with pytest.raises(AssertionError, match="must not convert"):
        specs.axis_judges(default)  # the executor-side path does convert: the guard above is real


def test_judge_modules_import_each_other_one_way_and_the_backend_is_chosen_in_one_place():
    """udfs/judge.py (types, endpoint backend) <- udfs/judge_local.py <- udfs/judge_backends.py,
    counting imports inside functions too: no circle, and `get_backend` only in judge_backends."""
    import ast
    import typing
    from pathlib import Path

    import udfs.judge
    import udfs.judge_backends

    root = Path(__file__).resolve().parent.parent / "udfs"

    def imported(name: str) -> set[str]:
        tree = ast.parse((root / f"{name}.py").read_text())
        return {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module} | {
            a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
        }

    judge_modules = {"udfs.judge", "udfs.judge_local", "udfs.judge_backends"}
    assert imported("judge") & judge_modules == set()
    assert imported("judge_local") & judge_modules == {"udfs.judge"}
    assert imported("judge_backends") & judge_modules == {"udfs.judge", "udfs.judge_local"}
    declared = typing.get_args(typing.get_type_hints(udfs.judge.JudgeSpec)["backend"])
    assert sorted(udfs.judge_backends.BACKENDS) == sorted(declared) == ["openai", "transformers"]
