"""Benchmark metrics per item, as lmms-eval defines them for the benchmarks FineVision reports
(EvolvingLMMs-Lab/lmms-eval, `lmms_eval/tasks/<task>/`); plain functions, no model:

- `exact_match` (ai2d.yaml, scienceqa_img.yaml): equal after lower case and removing
  punctuation (`ignore_case`, `ignore_punctuation`);
- `yes_no` (mme/utils.py `parse_pred_ans`, lmms-eval@75571cfe): the prediction read as yes, no or
  other (lower case, stripped, dots removed; "yes"/"no" as is, a single "y"/"n", else "yes" or
  then "no" within its first four characters), equal to the reference's yes or no;
- `vqa_accuracy` (textvqa/utils.py, vqav2): the VQA accuracy, min(1, matching references / 3)
  averaged over leave-one-out subsets of the references, after the EvalAI answer normalisation
  (`_task_utils/vqa_eval_metric.py`); with a single reference it is an exact match of the
  normalised answers (lmms-eval's leave-one-out would score every item 0);
- `relaxed_accuracy` (chartqa/utils.py `relaxed_correctness`): numbers within 5% of a non-zero
  reference (a trailing % divides by 100), other answers equal ignoring case;
- `anls` (docvqa, infovqa; `api/metrics.py` `anls`): 1 - Levenshtein distance / the longer
  length, over lower-cased whitespace-collapsed strings, the best reference, 0 below 0.5;
- `contains` (ocrbench/utils.py): the lower-cased reference is a substring of the prediction;
- `option_accuracy` (multiple choice: AI2D, ScienceQA, MMMU, MMStar, SEED-Bench, MMBench): the
  option the prediction chooses (its letter, as mmstar/utils.py and seedbench/utils.py read it, or
  the text of exactly one option) is the reference's option; see `score_item`;
- `click_accuracy` (ScreenSpot-V2, as smol2operator evaluates it: huggingface/smol2operator
  utils/eval_prompt.py@828582de asks for `click(x, y)` in normalised coordinates): the point the
  predicted action clicks lies inside the element's box (edges included). The prediction is read by
  the GUI parser of training (`etl.sources.gui`: `Action:` prefixes and `<think>`/`<code>` removed,
  either render style, coordinates fractions of the screenshot); the reference is
  `etl.sources.gui.screenspot.screenspot_reference(...)`, the box normalised by the same `Frame`
  as training coordinates, which the ScreenSpot-V2 benchmark reader writes.
"""

from __future__ import annotations

import json
import re
import statistics
import string
from collections.abc import Callable

from etl.sources.gui import ActionError, clean_assistant_text, parse_unified
from etl.sources.gui.reasoning import split_reasoning

_SPACE = re.compile(r"\s+")
_PUNCTUATION = str.maketrans("", "", string.punctuation)
# One option per line as lmms-eval prompts them: "A. text" (also "(A) text", "A) text").
_OPTION_LINE = re.compile(r"^\s*\(?([A-Z])[.)]\s*(.+?)\s*$")
_LEADING_LETTER = re.compile(r"^\(?([A-Z])(?:[.):,\s]|$)")
_NAMED_LETTER = re.compile(r"\b(?:option|answer is|answer:)\s*\(?([A-Z])\b", re.IGNORECASE)
MULTIPLE_CHOICE_PROMPT = "\nAnswer with the option's letter from the given choices directly."


def _collapse(text: str) -> str:
    return _SPACE.sub(" ", (text or "").strip())


def exact_match(prediction: str, answers: list[str]) -> float:
    def norm(text: str) -> str:
        return _collapse((text or "").lower().translate(_PUNCTUATION))

    return float(any(norm(prediction) == norm(a) for a in answers))


# The EvalAI answer normalisation of the VQA challenge, as lmms-eval's EvalAIAnswerProcessor
# applies it (the contraction table is left out: it only restores apostrophes).
_NUMBER_WORDS = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
_ARTICLES = {"a", "an", "the"}
_PERIOD = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_NUMBER = re.compile(r"(\d)(,)(\d)")
_VQA_PUNCTUATION = [
    ";",
    "/",
    "[",
    "]",
    '"',
    "{",
    "}",
    "(",
    ")",
    "=",
    "+",
    "\\",
    "_",
    "-",
    ">",
    "<",
    "@",
    "`",
    ",",
    "?",
    "!",
]


def vqa_normalise(answer: str) -> str:
    text = _collapse(answer.replace("\n", " ").replace("\t", " ")).lower()
    for mark in _VQA_PUNCTUATION:
        if (mark + " " in text or " " + mark in text) or _COMMA_NUMBER.search(text) is not None:
            text = text.replace(mark, "")
        else:
            text = text.replace(mark, " ")
    text = _PERIOD.sub("", text)
    words = [_NUMBER_WORDS.get(word, word) for word in text.split() if word not in _ARTICLES]
    return " ".join(words)


def vqa_accuracy(prediction: str, answers: list[str]) -> float:
    predicted = vqa_normalise(prediction)
    references = [vqa_normalise(a) for a in answers]
    if len(references) == 1:
        return float(predicted == references[0])
    scores = []
    for held_out in range(len(references)):
        others = references[:held_out] + references[held_out + 1 :]
        scores.append(min(1.0, sum(r == predicted for r in others) / 3))
    return statistics.mean(scores)


def _float(text: str) -> float | None:
    try:
        return float(text.rstrip("%")) / 100 if text.endswith("%") else float(text)
    except ValueError:
        return None


def relaxed_accuracy(prediction: str, answers: list[str], tolerance: float = 0.05) -> float:
    predicted = _float(prediction.strip())
    for answer in answers:
        target = _float(answer.strip())
        if predicted is not None and target:  # a zero reference is compared as text, as in lmms-eval
            if abs(predicted - target) / abs(target) <= tolerance:
                return 1.0
        elif prediction.strip().lower() == answer.strip().lower():
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
    predicted = " ".join(prediction.strip().lower().split())
    distances = []
    for answer in answers:
        reference = " ".join(answer.strip().lower().split())
        longest = max(len(answer), len(prediction))
        distances.append(0.0 if longest == 0 else _levenshtein(reference, predicted) / longest)
    if not distances:
        return 0.0
    similarity = 1.0 - min(distances)
    return similarity if similarity >= threshold else 0.0


def contains(prediction: str, answers: list[str]) -> float:
    predicted = prediction.lower().strip().replace("\n", " ")
    return float(any(a.lower().strip().replace("\n", " ") in predicted for a in answers if a.strip()))


def options_in(question: str) -> dict[str, str]:
    """The options listed in a question, letter -> text: consecutive lines `A. ...`, `B. ...` (at
    least two, starting at A); {} for an open question."""
    found: dict[str, str] = {}
    for line in (question or "").splitlines():
        match = _OPTION_LINE.match(line)
        if match and match.group(1) == chr(ord("A") + len(found)):
            found[match.group(1)] = match.group(2)
        elif found and match is None and line.strip():
            break  # the options have ended (an instruction follows)
    return found if len(found) >= 2 else {}


def _norm_option(text: str) -> str:
    return _collapse(text.lower().translate(_PUNCTUATION))


def reference_option(answer: str, options: dict[str, str]) -> str | None:
    """The reference's letter: the answer is a letter (or `(B)`), or the text of one option."""
    letter = answer.strip().strip("()").strip()
    if letter.upper() in options and len(letter) == 1:
        return letter.upper()
    matches = [k for k, v in options.items() if _norm_option(v) == _norm_option(answer)]
    return matches[0] if len(matches) == 1 else None


def chosen_option(prediction: str, options: dict[str, str]) -> str | None:
    """The option a prediction chooses: a leading letter (`B`, `(B)`, `B.`), `option B` / `the
    answer is B`, or the text of exactly one option; None when it chooses none."""
    text = prediction.strip()
    for pattern in (_LEADING_LETTER, _NAMED_LETTER):
        match = pattern.search(text)
        if match and match.group(1).upper() in options:
            return match.group(1).upper()
    named = [k for k, v in options.items() if _norm_option(v) and _norm_option(v) in _norm_option(text)]
    return named[0] if len(named) == 1 else None


def click_point(prediction: str) -> tuple[float, float] | None:
    """Where the first action with coordinates of a GUI action text clicks; None when there is no
    such action (the whole text, else the first line that parses)."""
    text = clean_assistant_text(prediction or "")
    for candidate in [text, *text.splitlines()]:
        try:
            actions = parse_unified(split_reasoning(candidate).calls)
        except ActionError:
            continue
        for action in actions:
            arguments = action.kwargs
            if "x" in arguments:
                return arguments["x"], arguments["y"]
        return None
    return None


def click_accuracy(prediction: str, answers: list[str]) -> float:
    point = click_point(prediction)
    if point is None:
        return 0.0
    x, y = point
    for answer in answers:
        left, top, right, bottom = json.loads(answer)["bbox"]
        if left <= x <= right and top <= y <= bottom:
            return 1.0
    return 0.0


def yes_no_label(text: str) -> str:
    """yes, no or other, as lmms-eval's MME task reads a prediction (see the module docstring)."""
    text = (text or "").lower().strip().replace(".", "")
    if text in ("yes", "no"):
        return text
    if len(text) == 1:
        return {"y": "yes", "n": "no"}.get(text, "other")
    head = text[:4]
    return "yes" if "yes" in head else "no" if "no" in head else "other"


def yes_no(prediction: str, answers: list[str]) -> float:
    label = yes_no_label(prediction)
    return float(label != "other" and any(label == (a or "").strip().lower() for a in answers))


METRICS: dict[str, Callable[[str, list[str]], float]] = {
    "exact_match": exact_match,
    "yes_no": yes_no,
    "vqa_accuracy": vqa_accuracy,
    "relaxed_accuracy": relaxed_accuracy,
    "anls": anls,
    "contains": contains,
    "click_accuracy": click_accuracy,
}
MULTIPLE_CHOICE = "option_accuracy"
METRIC_NAMES = (*METRICS, MULTIPLE_CHOICE)


def score_item(metric: str, prediction: str, answer: str, question: str) -> tuple[float, str | None]:
    """(score, chosen option letter or None). `option_accuracy` compares the chosen option with the
    reference's; an item without options (MMMU's open questions) is scored by `contains` there."""
    if metric == MULTIPLE_CHOICE:
        options = options_in(question)
        target = reference_option(answer, options) if options else None
        if target is not None:
            chosen = chosen_option(prediction, options)
            return float(chosen == target), chosen
        return contains(prediction, [answer]), None
    return METRICS[metric](prediction, [answer]), None
