"""Text-only arithmetic tutoring dialogues, as chat JSONL (`sharegpt_jsonl`): mostly OpenAI-style
`messages` (some with a system message), some in ShareGPT `conversations` form.

Category Text-only: FineVision files every image-free subset there (its text-only maths sets
included); its Mathematics category is for maths questions about images.

Hidden among the dialogues: a line that is not JSON, a message whose content is a number, a
dialogue with one ~12k-word turn (over 8,192 SmolLM2 tokens: the turn is dropped, the others
stay) and a dialogue whose only turn is that long (no turn left: quarantined by cleaning).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from etl.samples.corpus import Corpus, insert_at_random, json_line, ref

DIALOGUES = 150  # per unit of scale
LONG_WORDS = 12_000
SYSTEMS = [
    "You are a patient maths tutor. Show your working.",
    "You are a helpful assistant. Answer arithmetic questions exactly.",
]
OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "×": lambda a, b: a * b}


def specs(prefix: str) -> list[dict[str, Any]]:
    return [
        {
            "name": "arithmetic",
            "format": "sharegpt_jsonl",
            "location": f"{prefix}/arithmetic/dialogues.jsonl",
            "subset": "arithmetic",
            "category": "Text-only",
            "fields": {"id": "id"},
        }
    ]


def first_question(rng: np.random.Generator) -> tuple[str, str, int]:
    kind = int(rng.integers(4))
    if kind == 3:  # exact division
        b = int(rng.integers(2, 13))
        quotient = int(rng.integers(2, 50))
        a = b * quotient
        return f"What is {a} ÷ {b}?", f"{a} ÷ {b} = {quotient}.", quotient
    op = list(OPS)[kind]
    a, b = int(rng.integers(10, 500)), int(rng.integers(2, 100 if op == "×" else 500))
    result = OPS[op](a, b)
    phrasing = ["What is {a} {op} {b}?", "Compute {a} {op} {b}.", "Can you work out {a} {op} {b}?"][
        int(rng.integers(3))
    ]
    return phrasing.format(a=a, op=op, b=b), f"{a} {op} {b} = {result}.", result


def follow_up(rng: np.random.Generator, value: int) -> tuple[str, str, int]:
    op = list(OPS)[int(rng.integers(3))]
    k = int(rng.integers(2, 20))
    question = {
        "+": f"Now add {k} to the result.",
        "-": f"Now subtract {k} from the result.",
        "×": f"Now multiply the result by {k}.",
    }[op]
    result = OPS[op](value, k)
    return question, f"{value} {op} {k} = {result}.", result


def dialogue(rng: np.random.Generator, min_turns: int = 1) -> list[tuple[str, str]]:
    """One to three turns: a question, then follow-ups on the previous result."""
    question, answer, value = first_question(rng)
    turns = [(question, answer)]
    for _ in range(max(int(rng.integers(1, 4)), min_turns) - 1):
        question, answer, value = follow_up(rng, value)
        turns.append((question, answer))
    return turns


def long_turn(rng: np.random.Generator) -> tuple[str, str]:
    numbers = rng.integers(10, 100, size=LONG_WORDS).tolist()
    question = "Add up all of these numbers: " + " ".join(map(str, numbers)) + ". What is the total?"
    return question, f"The total is {sum(numbers)}."


def as_messages(key: str, turns: list[tuple[str, str]], system: str | None) -> dict[str, Any]:
    messages = [{"role": "system", "content": system}] if system else []
    for user, assistant in turns:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return {"id": key, "messages": messages}


def as_sharegpt(key: str, turns: list[tuple[str, str]]) -> dict[str, Any]:
    conversations = []
    for user, assistant in turns:
        conversations += [{"from": "human", "value": user}, {"from": "gpt", "value": assistant}]
    return {"id": key, "conversations": conversations}


def build(corpus: Corpus) -> None:
    (spec,) = specs(corpus.prefix)
    rng = corpus.rng("arithmetic")
    records: list[dict[str, Any]] = []
    for _ in range(DIALOGUES * corpus.scale):
        turns = dialogue(rng)
        draw = rng.random()
        if draw < 0.2:
            records.append({"form": "sharegpt", "turns": turns})
        else:
            records.append(
                {"form": "messages", "turns": turns, "system": SYSTEMS[int(rng.integers(2))] if draw > 0.75 else None}
            )
    with_long = dialogue(rng, min_turns=2)
    with_long.insert(1, long_turn(rng))
    special = [
        {"form": "messages", "turns": with_long, "system": SYSTEMS[0], "long_turn": 1},
        {"form": "messages", "turns": [long_turn(rng)], "system": None, "broken": "no_turns_left"},
        {
            "form": "raw",
            "line": '{"id": "arith-broken-000", "messages": [{"role": "user", "content": "What is 2 + 2?"}, '
            '{"role": "assistant", "content": "2 + 2 = 4."}',
            "broken": "invalid_json",
        },
        {
            "form": "raw",
            "line": json_line(
                {
                    "id": "arith-broken-001",
                    "messages": [
                        {"role": "user", "content": 42},
                        {"role": "assistant", "content": "42 is a number, not a question."},
                    ],
                }
            ),
            "broken": "wrong_type",
        },
    ]
    records = insert_at_random(rng, records, special)

    lines = []
    for row, record in enumerate(records):
        key = f"arith-{row:05d}"
        ref_key: str | None = key  # the key the ingest stage will find (none in a line that does not parse)
        if record["form"] == "raw":
            lines.append(record["line"])
            ref_key = None if record["broken"] == "invalid_json" else "arith-broken-001"
        elif record["form"] == "sharegpt":
            lines.append(json_line(as_sharegpt(key, record["turns"])))
        else:
            lines.append(json_line(as_messages(key, record["turns"], record["system"])))
        where = ref(corpus, "arithmetic", "arithmetic/dialogues.jsonl", row=row, key=ref_key)
        if "long_turn" in record:
            words = len(record["turns"][record["long_turn"]][0].split())
            corpus.dropped_turns.append(
                {
                    "reason": "too_many_tokens",
                    **where,
                    "turn_index": record["long_turn"],
                    "words": words,
                    "turns": len(record["turns"]),
                    "turns_left": len(record["turns"]) - 1,
                }
            )
        broken = record.get("broken")
        if broken == "no_turns_left":
            corpus.broken.append(
                {
                    "reason": broken,
                    "stage": "clean",
                    **where,
                    "words": len(record["turns"][0][0].split()),
                    "detail": "its only turn has ~12k words (> 8,192 SmolLM2 tokens) and is dropped",
                }
            )
        elif broken == "invalid_json":
            corpus.broken.append(
                {"reason": broken, "stage": "ingest", **where, "detail": "line cut before its closing ]}"}
            )
        elif broken == "wrong_type":
            corpus.broken.append(
                {"reason": broken, "stage": "ingest", **where, "detail": "a message's content is the number 42"}
            )
    corpus.write_jsonl("arithmetic/dialogues.jsonl", lines)
    corpus.record(spec, "arithmetic", records=len(lines), samples=len(lines), images=0)
