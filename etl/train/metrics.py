"""The reference's benchmark metrics, per item (plain functions, no model):

- `exact_match` (AI2D, ScienceQA, TextVQA): the normalised prediction equals a normalised answer;
- `relaxed_accuracy` (ChartQA): numbers within 5% of the answer, other answers exactly;
- `anls` (DocVQA, InfoVQA): 1 - normalised Levenshtein distance, 0 below 0.5, best over answers;
- `accuracy` (MMMU, MMStar, OCRBench, SEED-Bench): for a one-letter answer (multiple choice) the
  first option letter of the prediction, otherwise the answer contained in the prediction.

Normalisation: lower case, surrounding space and final punctuation removed, inner spaces collapsed.
"""

from __future__ import annotations

import re
from typing import Callable

_SPACE = re.compile(r"\s+")
_OPTION = re.compile(r"\b([A-Z])\b")


def normalise(text: str) -> str:
    return _SPACE.sub(" ", (text or "").strip().lower()).strip(" .,;:!?\"'")


def exact_match(prediction: str, answers: list[str]) -> float:
    return float(any(normalise(prediction) == normalise(a) for a in answers))


def _number(text: str) -> float | None:
    try:
        return float(normalise(text).rstrip("%").replace(",", ""))
    except ValueError:
        return None


def relaxed_accuracy(prediction: str, answers: list[str], tolerance: float = 0.05) -> float:
    predicted = _number(prediction)
    for answer in answers:
        target = _number(answer)
        if predicted is not None and target is not None:
            if (target == 0 and predicted == 0) or (target != 0 and abs(predicted - target) / abs(target) <= tolerance):
                return 1.0
        elif normalise(prediction) == normalise(answer):
            return 1.0
    return 0.0


def _levenshtein(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def anls(prediction: str, answers: list[str], threshold: float = 0.5) -> float:
    best = 0.0
    p = normalise(prediction)
    for answer in answers:
        a = normalise(answer)
        longest = max(len(p), len(a))
        similarity = 1.0 if longest == 0 else 1.0 - _levenshtein(p, a) / longest
        best = max(best, similarity if similarity >= threshold else 0.0)
    return best


def accuracy(prediction: str, answers: list[str]) -> float:
    for answer in answers:
        if re.fullmatch(r"[A-Za-z]", answer.strip()):
            option = _OPTION.search(prediction.strip().upper())
            if option and option.group(1) == answer.strip().upper():
                return 1.0
        elif normalise(answer) and normalise(answer) in normalise(prediction):
            return 1.0
    return 0.0


METRICS: dict[str, Callable[[str, list[str]], float]] = {
    "exact_match": exact_match,
    "relaxed_accuracy": relaxed_accuracy,
    "anls": anls,
    "accuracy": accuracy,
}
