"""The real easy-VQA dataset (package `easy-vqa`): a sample of its train split as the training
subset `easyvqa`, a sample of its test split as the local benchmark `easyvqa_test`.

Train rows are one question each, grouped by image (`group_by: image`), so the questions about
one image become the turns of one sample. Transformed copies of a few benchmark images, with
their benchmark questions, are hidden among the train images: contamination to be found.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import easy_vqa

from etl.samples.corpus import Corpus, insert_at_random, json_line, ref, transform_copy

TRAIN_IMAGES = 300  # per unit of scale; the package has 4,000
TEST_ITEMS = 100  # benchmark items: one question each about 100 distinct test images
QUESTIONS_PER_IMAGE = 6
# (transformation, must_find). SSCD is unstable on these 64 px flat-colour images: measured with
# the int8 sscd.onnx, even a 1.5x resize scores 0.87-0.98 against the original and a JPEG q75
# copy 0.3-0.8, so only the pixel-identical re-save is a copy a 0.95 threshold must find; the
# other two are recall material.
INJECTED = (("recompress", True), ("resize_1.5", False), ("jpeg_q75", False))


def specs(prefix: str) -> list[dict[str, Any]]:
    return [
        {
            "name": "easyvqa",
            "format": "vqa_jsonl",
            "location": f"{prefix}/easyvqa/train.jsonl",
            "image_root": f"{prefix}/easyvqa",
            "subset": "easyvqa",
            "category": "General VQA",
            "fields": {"image": "image", "question": "question", "answer": "answer"},
            "group_by": "image",
        },
        {
            "name": "easyvqa_test",
            "format": "vqa_jsonl",
            "location": f"{prefix}/easyvqa_test/test.jsonl",
            "image_root": f"{prefix}/easyvqa_test",
            "subset": "easyvqa_test",
            "category": "General VQA",
            "benchmark": "easyvqa_test",
            "fields": {"id": "item_id", "image": "image", "question": "question", "answer": "answer"},
        },
    ]


def _questions_by_image(questions: tuple[list, list, list]) -> dict[int, list[tuple[int, str, str]]]:
    by_image: dict[int, list[tuple[int, str, str]]] = {}
    for index, (text, answer, image_id) in enumerate(zip(*questions, strict=False)):
        by_image.setdefault(image_id, []).append((index, text, answer))
    return by_image


def build(corpus: Corpus) -> None:
    train_spec, test_spec = specs(corpus.prefix)
    test_by_image = _questions_by_image(easy_vqa.get_test_questions())
    test_paths = easy_vqa.get_test_image_paths()

    # benchmark: one question about each of TEST_ITEMS distinct test images
    rng = corpus.rng("easyvqa_test")
    test_ids = sorted(rng.choice(sorted(test_by_image), size=TEST_ITEMS, replace=False).tolist())
    items = []
    for image_id in test_ids:
        index, question, answer = test_by_image[image_id][int(rng.integers(len(test_by_image[image_id])))]
        data = Path(test_paths[image_id]).read_bytes()
        image = f"images/{image_id}.png"
        corpus.write(f"easyvqa_test/{image}", data)
        items.append(
            {
                "item_id": f"easyvqa-test-{index}",
                "image": image,
                "question": question,
                "answer": answer,
                "_image_id": image_id,
                "_bytes": data,
            }
        )
    corpus.write_jsonl(
        "easyvqa_test/test.jsonl",
        [json_line({k: v for k, v in item.items() if not k.startswith("_")}) for item in items],
    )
    corpus.record(test_spec, "easyvqa_test", records=len(items), samples=len(items), images=len(items))

    # training subset
    train_questions = easy_vqa.get_train_questions()
    train_by_image = _questions_by_image(train_questions)
    train_paths = easy_vqa.get_train_image_paths()
    rng = corpus.rng("easyvqa")
    count = min(TRAIN_IMAGES * corpus.scale, len(train_by_image))
    train_ids = sorted(rng.choice(sorted(train_by_image), size=count, replace=False).tolist())
    groups: list[dict[str, Any]] = []
    for image_id in train_ids:
        questions = train_by_image[image_id][:QUESTIONS_PER_IMAGE]
        groups.append(
            {
                "image": f"images/{image_id}.png",
                "bytes": Path(train_paths[image_id]).read_bytes(),
                "rows": [(f"train-q{i}", q, a) for i, q, a in questions],
            }
        )

    next_question = len(train_questions[0])
    # the copies and the missing image take train ids this sample does not use: they look like the rest
    unused = sorted(set(train_by_image) - set(train_ids))
    names = [unused[i] for i in rng.choice(len(unused), size=len(INJECTED) + 1, replace=False).tolist()]
    injected = []
    chosen = sorted(rng.choice(len(items), size=len(INJECTED), replace=False).tolist())
    for item_index, (transformation, must_find), name in zip(chosen, INJECTED, names, strict=False):
        item = items[item_index]
        data, extension = transform_copy(item["_bytes"], transformation)
        rows = []
        for _, question, answer in test_by_image[item["_image_id"]][:QUESTIONS_PER_IMAGE]:
            rows.append((f"train-q{next_question}", question, answer))
            next_question += 1
        injected.append(
            {
                "image": f"images/{name}.{extension}",
                "bytes": data,
                "rows": rows,
                "item": item,
                "transformation": transformation,
                "must_find": must_find,
            }
        )
    missing = {
        "image": f"images/{names[-1]}.png",
        "bytes": None,
        "broken": "missing_image",
        "rows": [(f"train-q{next_question}", "what shape is in the image?", "circle")],
    }
    groups = insert_at_random(rng, groups, [*injected, missing])

    lines, row = [], 0
    for group in groups:
        if group["bytes"] is not None:
            corpus.write(f"easyvqa/{group['image']}", group["bytes"])
        first = row
        for question_id, question, answer in group["rows"]:
            lines.append(
                json_line({"id": question_id, "image": group["image"], "question": question, "answer": answer})
            )
            row += 1
        where = ref(
            corpus,
            "easyvqa",
            "easyvqa/train.jsonl",
            row=first,
            key=group["image"],
            image=f"easyvqa/{group['image']}",
            image_bytes=group["bytes"],
        )
        if "item" in group:
            item = group["item"]
            corpus.contamination.append(
                {
                    "benchmark": "easyvqa_test",
                    "item_id": item["item_id"],
                    "benchmark_ref": ref(
                        corpus,
                        "easyvqa_test",
                        "easyvqa_test/test.jsonl",
                        row=items.index(item),
                        key=item["item_id"],
                        image=f"easyvqa_test/{item['image']}",
                        image_bytes=item["_bytes"],
                    ),
                    "training": where | {"rows": len(group["rows"])},
                    "transformation": group["transformation"],
                    "must_find": group["must_find"],
                }
            )
        if group.get("broken") == "missing_image":
            corpus.broken.append(
                {
                    "reason": "missing_image",
                    "stage": "ingest",
                    **where,
                    "detail": f"row points at {group['image']}, which is not in the image folder",
                }
            )
    corpus.write_jsonl("easyvqa/train.jsonl", lines)
    corpus.record(
        train_spec,
        "easyvqa",
        records=len(lines),
        samples=len(groups),
        images=sum(g["bytes"] is not None for g in groups),
    )
