"""The official aggregates (etl/train/aggregates.py) against lmms-eval's definitions, written down
here as facts (EvolvingLMMs-Lab/lmms-eval@75571cfe0fa36ca5ec2e6aa2bb268f9d38295af3):

- mme/utils.py `mme_aggregate_results`: per image, acc = percent of its two questions right,
  acc+ = 100 if both are right; a category scores the mean of acc + acc+ over its images;
  mme_perception_score sums the 10 perception categories (at most 10 x 200 = 2000),
  mme_cognition_score the 4 cognition ones (at most 4 x 200 = 800);
- mmstar/utils.py `mmstar_aggregate_results` (metric `average`): mean over l2 categories of their
  mean score; 6 categories of 3 l2 categories each;
- ocrbench/utils.py `ocrbench_aggregate_accuracy`: the number of items right (of 1000).

Each expected value is worked out by hand from those rules in the comments, not by the code."""

import pytest

from etl.train.aggregates import AGGREGATES, MME_COGNITION, MME_PERCEPTION, MMSTAR_CATEGORIES, mme, mmstar, ocrbench

MME_FACTS = {"perception": 10, "cognition": 4, "perception_out_of": 2000, "cognition_out_of": 800}
MMSTAR_FACTS = {"categories": 6, "l2_per_category": 3}


def test_the_catalogues_of_categories_are_lmms_evals():
    assert len(MME_PERCEPTION) == MME_FACTS["perception"] and len(MME_COGNITION) == MME_FACTS["cognition"]
    assert len(MMSTAR_CATEGORIES) == MMSTAR_FACTS["categories"]
    assert all(len(l2) == MMSTAR_FACTS["l2_per_category"] for l2 in MMSTAR_CATEGORIES.values())


def test_mme_sums_acc_plus_acc_plus_per_category_into_perception_and_cognition():
    items = [
        # existence, image 1: both right -> acc 100 + acc+ 100 = 200
        ("existence/1.png", 1.0),
        ("existence/1.png", 1.0),
        # existence, image 2: one of two right -> acc 50 + acc+ 0 = 50; existence = (200 + 50) / 2 = 125
        ("existence/2.png", 1.0),
        ("existence/2.png", 0.0),
        # count, image 1: none right -> 0; count = 0
        ("count/1.png", 0.0),
        ("count/1.png", 0.0),
        # code_reasoning, image 1: both right -> 200; code_reasoning = 200
        ("code_reasoning/1.png", 1.0),
        ("code_reasoning/1.png", 1.0),
    ]
    # perception = existence 125 + count 0 = 125; cognition = code_reasoning 200
    assert mme(items) == {"perception_total": 125.0, "cognition_total": 200.0}


def test_mme_at_best_is_2000_and_800():
    items = [(f"{c}/{i}.png", 1.0) for c in MME_PERCEPTION + MME_COGNITION for i in (1, 2) for _ in (0, 1)]
    assert mme(items) == {
        "perception_total": MME_FACTS["perception_out_of"],
        "cognition_total": MME_FACTS["cognition_out_of"],
    }


def test_mme_names_an_unknown_category():
    with pytest.raises(ValueError, match="mme: unknown categories \\['colour'\\]"):
        mme([("colour/1.png", 1.0)])


def test_mmstar_is_the_mean_of_its_l2_category_means():
    items = [
        # image emotion: 1 of 2 right -> 0.5
        ("image emotion/1", 1.0),
        ("image emotion/2", 0.0),
        # geometry: 3 of 4 right -> 0.75
        ("geometry/3", 1.0),
        ("geometry/4", 1.0),
        ("geometry/5", 1.0),
        ("geometry/6", 0.0),
    ]
    # (0.5 + 0.75) / 2 = 0.625 -> 62.5 percent; not the mean item score 4 / 6
    assert mmstar(items) == {"category_mean": 62.5}


def test_ocrbench_counts_the_items_right_of_1000():
    assert ocrbench([(str(i), float(i < 600)) for i in range(1000)]) == {"correct_of_1000": 600.0}
    assert ocrbench([("a", 1.0), ("b", 0.0), ("c", 0.0), ("d", 1.0)]) == {"correct_of_1000": 500.0}  # half of 1000


def test_an_item_id_without_its_group_is_refused():
    with pytest.raises(ValueError, match="item id '7' names no group"):
        AGGREGATES["mmstar"]([("7", 1.0)])


def test_evaluation_reports_the_aggregates_over_all_contaminated_and_clean_items():
    import pandas as pd

    from etl.train.evaluate import Score, official_scores

    predictions = pd.DataFrame(
        [
            # (benchmark, item_id, contaminated, score); ocrbench's item ids carry no group
            ("ocrbench", "a", True, 1.0),
            ("ocrbench", "b", False, 1.0),
            ("ocrbench", "c", False, 0.0),
            ("mmstar", "math/1", False, 1.0),  # no aggregate asked for mmstar below: left out
            ("chartqa", "q1", False, 1.0),
        ],
        columns=["benchmark", "item_id", "contaminated", "score"],
    )
    # all: 2 of 3 right -> 666.7 of 1000; contaminated: 1 of 1 -> 1000; clean: 1 of 2 -> 500
    [score] = official_scores(predictions, {"ocrbench": "ocrbench", "mme": "mme"})
    assert score == Score("ocrbench", "correct_of_1000", pytest.approx(2000 / 3), 1000.0, 500.0, 3, 1)


def test_the_shipped_eval_config_asks_for_every_official_aggregate():
    from etl.train.evaluate import load_eval_config

    assert load_eval_config().aggregates == {"mme": "mme", "mmstar": "mmstar", "ocrbench": "ocrbench"}
