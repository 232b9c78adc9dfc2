"""Evaluation without a model: how many tokens each benchmark may generate (lmms-eval's
generation_kwargs, conf/eval.yaml) and how answers are batched by it."""

import pandas as pd
import pytest

from etl.config import ConfigError
from etl.train import evaluate as evaluation
from etl.train.evaluate import EvalConfig, ModelSpec, checked, load_eval_config
from tests.conftest import png_bytes

# lmms-eval@75571cfe0fa36ca5ec2e6aa2bb268f9d38295af3, generation_kwargs.max_new_tokens of
# lmms_eval/tasks/ocrbench/ocrbench.yaml, docvqa/_default_template_docvqa_yaml, mmmu/_default_template_yaml,
# mmbench/_default_template_mmbench_en_yaml and mme/mme.yaml.
LMMS_EVAL_MAX_NEW_TOKENS = {"ocrbench": 128, "docvqa_val": 32, "mmmu": 128, "mmbench_en": 1024, "mme": 16}


def test_the_catalogue_gives_lmms_evals_max_new_tokens_per_task_and_16_elsewhere():
    config = load_eval_config()
    assert LMMS_EVAL_MAX_NEW_TOKENS.items() <= config.max_new_tokens_per_benchmark.items()
    assert config.max_new_tokens == 16
    # the demo's benchmarks (etl/demo.py evaluates them) keep the fallback: no longer to generate
    assert not {"easyvqa_test", "chartqa_local"} & set(config.max_new_tokens_per_benchmark)


def test_a_non_positive_length_is_refused_naming_the_benchmark():
    with pytest.raises(ConfigError, match="max_new_tokens_per_benchmark: must be positive, got {'mme': 0}"):
        checked(EvalConfig(max_new_tokens_per_benchmark={"mme": 0}))


def test_answers_are_generated_per_benchmark_length_and_image_presence(monkeypatch):
    calls = []

    def fake_generate(model, processor, device, prompts, images, max_new_tokens):
        calls.append((len(prompts), bool(images), max_new_tokens))
        return [f"{max_new_tokens}" for _ in prompts]

    monkeypatch.setattr(evaluation, "loaded", lambda spec: (None, None, "cpu"))
    monkeypatch.setattr(evaluation, "generate", fake_generate)
    image = [{"bytes": png_bytes()}]
    batch = pd.DataFrame(
        {
            "benchmark": ["ocr", "ocr", "ocr", "yesno"],
            "item_id": ["o1", "o2", "o3", "y1"],
            "contaminated": [False] * 4,
            "metric": ["contains", "contains", "contains", "exact_match"],
            "images": [image, image, [], image],  # o3 has no image: a call of its own
            "question": ["Read it.", "Read it.", "Read it.", "Is it red?"],
            "answer": ["128", "128", "128", "16"],
            "post_prompt": [""] * 4,
            "max_new_tokens": [128, 128, 128, 16],
        }
    )
    out = evaluation.answer_batch(ModelSpec("m", "file:/x", batch_size=8), batch)
    assert sorted(calls) == [(1, False, 128), (1, True, 16), (2, True, 128)]
    assert list(out["prediction"]) == ["128", "128", "128", "16"] and list(out["score"]) == [1.0] * 4


def test_average_rank_ranks_runs_per_benchmark_then_averages_with_ties_sharing():
    from etl.train.ranks import average_ranks, ranks

    assert ranks({"a": 0.5, "b": 0.9, "c": 0.5, "d": 0.1}) == {"a": 2.5, "b": 1.0, "c": 2.5, "d": 4.0}
    scores = {
        "a": {"mme": 1500.0, "ocrbench": 600.0, "chartqa": 0.40},
        "b": {"mme": 1400.0, "ocrbench": 600.0, "chartqa": 0.50},
        "c": {"mme": 1300.0, "ocrbench": 500.0},  # no chartqa: ranked on the other two
    }
    # mme: a 1, b 2, c 3; ocrbench: a and b tie for 1-2 -> 1.5 each, c 3; chartqa: b 1, a 2
    assert average_ranks(scores) == {
        "a": pytest.approx((1 + 1.5 + 2) / 3),
        "b": pytest.approx((2 + 1.5 + 1) / 3),
        "c": 3.0,
    }


def test_the_reported_score_of_a_benchmark_is_its_official_aggregate_else_its_metric():
    from etl.train.ranks import reported_scores

    logged = {
        "eval/mme/yes_no": 0.8,
        "eval/mme/perception_total": 1400.0,
        "eval/mme/cognition_total": 300.0,
        "eval/mme/perception_total.clean": 1390.0,
        "eval/mme/items": 2374,
        "eval/chartqa/relaxed_accuracy": 0.6,
        "eval/chartqa/relaxed_accuracy.contaminated": 0.9,
        "eval/screenspot_v2/web/icon/click_accuracy": 0.3,
        "train/loss": 1.0,
    }
    assert reported_scores(logged) == {
        "mme/perception_total": 1400.0,
        "mme/cognition_total": 300.0,
        "chartqa/relaxed_accuracy": 0.6,
    }
