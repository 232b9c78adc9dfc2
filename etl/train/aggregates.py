"""The official aggregates of the benchmarks whose reported score is not the mean item score, as
lmms-eval computes them (EvolvingLMMs-Lab/lmms-eval at commit 75571cfe0fa36ca5ec2e6aa2bb268f9d38295af3,
`lmms_eval/tasks/<task>/utils.py`) and the FineVision paper's tables report them. Plain functions of
(item_id, score) pairs, the item scores of etl/train/metrics.py:

- `mme` (mme/utils.py `mme_aggregate_results`): an image's two yes/no questions share an item id;
  per image acc (percent of its questions right) + acc+ (100 when all are right); a category's score
  is the mean over its images (0 to 200); `perception_total` sums the ten perception categories
  (out of 2000), `cognition_total` the four cognition ones (out of 800);
- `mmstar` (mmstar/utils.py `mmstar_aggregate_results`, metric `average`): the mean over the l2
  categories of their mean item score, in percent; each of the six categories holds three l2
  categories, so it is also the mean of the six category scores (`category_mean`);
- `ocrbench` (ocrbench/utils.py `ocrbench_aggregate_accuracy`): items right out of 1000
  (`correct_of_1000`, the mean item score times 1000: the count right when all 1000 are asked).

An item's group (MME's `category`, MMStar's `l2_category`) is the part of its item id before the
first `/`: ingest writes `<group>/<id>` for a catalogue unit with a `group_field`
(conf/benchmarks/lmms_eval.yaml).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable

Items = Iterable[tuple[str, float]]

MME_PERCEPTION = (
    "existence",
    "count",
    "position",
    "color",
    "posters",
    "celebrity",
    "scene",
    "landmark",
    "artwork",
    "OCR",
)
MME_COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")
MMSTAR_CATEGORIES = {
    "coarse perception": ("image scene and topic", "image style & quality", "image emotion"),
    "fine-grained perception": ("object counting", "recognition", "localization"),
    "instance reasoning": (
        "single-instance reasoning",
        "cross-instance attribute reasoning",
        "cross-instance relation reasoning",
    ),
    "logical reasoning": ("code & sequence reasoning", "diagram reasoning", "common reasoning"),
    "science & technology": (
        "biology & chemistry & physics",
        "electronics & energy & mechanical eng.",
        "geography & earth science & agriculture",
    ),
    "math": ("geometry", "numeric commonsense and calculation", "statistical reasoning"),
}


def group_of(item_id: str) -> str:
    """The group an item id names: `<group>/<id>` -> group."""
    group, separator, _ = item_id.partition("/")
    if not separator:
        raise ValueError(f"item id {item_id!r} names no group: expected <group>/<id> (the unit's group_field)")
    return group


def _mean_by_group(items: Items) -> dict[str, float]:
    groups: dict[str, list[float]] = defaultdict(list)
    for item_id, score in items:
        groups[group_of(item_id)].append(score)
    return {group: statistics.mean(scores) for group, scores in groups.items()}


def _unknown(groups: Iterable[str], known: Iterable[str], benchmark: str) -> None:
    unknown = sorted(set(groups) - set(known))
    if unknown:
        raise ValueError(f"{benchmark}: unknown categories {unknown}; known: {sorted(known)}")


def mme_categories(items: Items) -> dict[str, float]:
    """Category -> mean over its images of acc + acc+ (0 to 200)."""
    images: dict[str, list[float]] = defaultdict(list)
    for item_id, score in items:
        images[item_id].append(score)
    per_image = [
        (item_id, 100 * statistics.mean(scores) + 100 * all(s == 1 for s in scores))
        for item_id, scores in images.items()
    ]
    categories = _mean_by_group(per_image)
    _unknown(categories, MME_PERCEPTION + MME_COGNITION, "mme")
    return categories


def mme(items: Items) -> dict[str, float]:
    categories = mme_categories(items)
    return {
        "perception_total": sum(categories.get(c, 0.0) for c in MME_PERCEPTION),
        "cognition_total": sum(categories.get(c, 0.0) for c in MME_COGNITION),
    }


def mmstar(items: Items) -> dict[str, float]:
    l2_categories = _mean_by_group(items)
    _unknown(l2_categories, [l2 for l2s in MMSTAR_CATEGORIES.values() for l2 in l2s], "mmstar")
    return {"category_mean": 100 * statistics.mean(l2_categories.values())}


def ocrbench(items: Items) -> dict[str, float]:
    return {"correct_of_1000": 1000 * statistics.mean(score for _, score in items)}


AGGREGATES: dict[str, Callable[[Items], dict[str, float]]] = {"mme": mme, "mmstar": mmstar, "ocrbench": ocrbench}
