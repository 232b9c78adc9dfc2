"""Turns per second of the local transformers judge with batching, against a plain loop that calls
the same model one turn at a time, in the same run (goal: at least 2x).

    .venv/bin/python bench/judge_throughput.py [--turns 48] [--batch-size 16] [--threads 2]

Turns are real questions and answers from the embedded sample corpus's generators when it has
been built (`data/samples`), else synthetic VQA-style turns; each is rated on the three text
axes, so the number of prompts is 3x the turns. Also reports whether batching changed any score.
"""

from __future__ import annotations

import argparse
import json
import time

from etl.config import PROJECT_ROOT, load_config
from etl.schema import RATING_AXES
from etl.specs import judge_spec
from udfs.judge import IMAGE_AXES, JudgeRequest, load_prompts
from udfs.judge_local import TransformersBackend

TEXT_AXES = tuple(axis for axis in RATING_AXES if axis not in IMAGE_AXES)


def sample_turns(n: int) -> list[tuple[str, str]]:
    turns: list[tuple[str, str]] = []
    photo_vqa = PROJECT_ROOT / "data" / "samples" / "photos" / "photos.json"
    if photo_vqa.exists():
        for record in json.loads(photo_vqa.read_text()):
            conv = record["conversations"]
            for q, a in zip(conv[0::2], conv[1::2], strict=False):
                turns.append((q["value"].replace("<image>", "").strip(), a["value"]))
    colours, shapes = ["red", "green", "blue", "yellow"], ["circle", "square", "triangle", "star"]
    i = 0
    while len(turns) < n:
        colour, shape = colours[i % 4], shapes[(i // 4) % 4]
        turns.append((f"What colour is the {shape} in the image?", f"The {shape} is {colour}." * (1 + i % 3)))
        i += 1
    return turns[:n]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    config = load_config(overrides=[f"rate.judges.smollm2_135m.batch_size={args.batch_size}"])
    spec = judge_spec(config.rate.judges["smollm2_135m"], args.threads)
    prompts = load_prompts(PROJECT_ROOT / config.rate.prompts_dir, TEXT_AXES)
    turns = sample_turns(args.turns)
    requests = [
        JudgeRequest(prompts[axis].render(q, a, config.rate.max_text_chars)) for q, a in turns for axis in TEXT_AXES
    ]

    start = time.perf_counter()
    backend = TransformersBackend(spec)
    load_s = time.perf_counter() - start
    backend.rate(requests[:2])  # warm-up of both paths' kernels
    backend.rate(requests[:1])

    start = time.perf_counter()
    looped = [backend.rate([request])[0] for request in requests]
    loop_s = time.perf_counter() - start
    start = time.perf_counter()
    batched = backend.rate(requests)
    batch_s = time.perf_counter() - start

    same = sum(a.score == b.score and a.error == b.error for a, b in zip(looped, batched, strict=False))
    scored = sum(v.score is not None for v in batched)
    print(f"judge {spec.judge_model} on {backend.device}, {args.threads} thread(s), model load {load_s:.1f}s")
    print(
        f"{len(turns)} turns x {len(TEXT_AXES)} text axes = {len(requests)} prompts; {scored} scored, "
        f"{len(requests) - scored} unparsable"
    )
    print(f"plain loop, one turn at a time : {len(turns) / loop_s:7.2f} turns/s  ({loop_s:.1f}s)")
    print(f"batched (batch_size {args.batch_size:>3})      : {len(turns) / batch_s:7.2f} turns/s  ({batch_s:.1f}s)")
    print(f"speed-up: {loop_s / batch_s:.2f}x (goal 2x); same verdict for {same}/{len(requests)} prompts")


if __name__ == "__main__":
    main()
