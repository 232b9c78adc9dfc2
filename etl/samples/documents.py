"""Rendered text documents for OCR (PIL, the built-in font at several sizes), as WebDataset tar
shards: `<key>.png|jpg` plus `<key>.txt` holding exactly the text drawn, one line per line.

The `.txt` is a transcription, not a question; the spec's question templates turn it into a turn,
as FineVision did for its Naive OCR sources. One real scanned page (scikit-image's `page.png`)
is in the mix with its hand transcription.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import skimage.data
from PIL import Image, ImageDraw, ImageFont

from etl.samples.corpus import Corpus, jpeg_bytes, png_bytes, ref, truncated

DOCUMENTS = 100  # per unit of scale
PER_SHARD = 50
TEMPLATES = [
    "What is written in the image?",
    "Read the text in this image.",
    "Transcribe all the text shown in the picture.",
    "What text appears in this image?",
]
PAGE_TEXT = (
    "Region-based segmentation\n"
    "Let us first determine markers of the coins and the\n"
    "background. These markers are pixels that we can label\n"
    "unambiguously as either object or background. Here,\n"
    "the markers are found at the two extreme parts of the\n"
    "histogram of grey values:\n"
    ">>> markers = np.zeros_like(coins)"
)

NAMES = ["Ada Park", "Ben Okafor", "Chen Wei", "Dana Cruz", "Eli Novak", "Farah Aziz", "Gus Moreau", "Hana Sato"]
SUBJECTS = ["Quarterly review", "Office move", "Server maintenance", "Holiday schedule", "Budget draft", "Team lunch"]
SHOPS = ["Corner Bakery", "Green Grocer", "Hilltop Hardware", "Blue Door Books", "Riverside Pharmacy"]
ITEMS = ["Bread", "Milk", "Coffee", "Nails", "Tape", "Notebook", "Apples", "Soap", "Batteries", "Tea", "Rice", "Pens"]
SUBJECT_WORDS = [
    "The meeting",
    "The new printer",
    "The east entrance",
    "Our delivery van",
    "The staff kitchen",
    "The weekly report",
    "The parking lot",
    "The fire drill",
    "The library",
    "The shuttle bus",
]
VERBS = [
    "will close",
    "has moved",
    "opens again",
    "is delayed",
    "needs repairs",
    "starts early",
    "is cancelled",
    "will be cleaned",
    "was updated",
    "runs late",
]
WHEN = [
    "on Monday",
    "next week",
    "at noon",
    "until Friday",
    "this evening",
    "after the holiday",
    "at 9 am",
    "for two days",
    "from 3 pm",
    "in March",
]
CODA = [
    "Please plan ahead.",
    "Thank you for your patience.",
    "Questions go to the front desk.",
    "Sorry for the trouble.",
    "See the board for details.",
    "Bring your badge.",
]
BACKGROUNDS = [(255, 255, 255), (250, 246, 235), (242, 242, 242), (255, 252, 240)]
INKS = [(20, 20, 20), (30, 30, 80), (60, 40, 30), (0, 0, 0)]


def specs(prefix: str) -> list[dict[str, Any]]:
    return [
        {
            "name": "documents",
            "format": "webdataset",
            "location": f"{prefix}/documents",
            "subset": "documents",
            "category": "Naive OCR",
            "question_templates": TEMPLATES,
        }
    ]


def _pick(rng: np.random.Generator, pool: list[str]) -> str:
    return pool[int(rng.integers(len(pool)))]


def _sentence(rng: np.random.Generator) -> str:
    return f"{_pick(rng, SUBJECT_WORDS)} {_pick(rng, VERBS)} {_pick(rng, WHEN)}."


def make_text(rng: np.random.Generator) -> str:
    """One short document: a memo, a receipt or a notice, lines separated by newlines."""
    kind = int(rng.integers(3))
    if kind == 0:
        return "\n".join(
            [
                "MEMO",
                f"To: {_pick(rng, NAMES)}",
                f"From: {_pick(rng, NAMES)}",
                f"Date: {int(rng.integers(1, 29)):02d}/{int(rng.integers(1, 13)):02d}/{int(rng.integers(2019, 2025))}",
                f"Subject: {_pick(rng, SUBJECTS)}",
                _sentence(rng),
            ]
        )
    if kind == 1:
        items = rng.choice(ITEMS, size=int(rng.integers(2, 5)), replace=False).tolist()
        prices = [int(rng.integers(50, 1500)) for _ in items]
        lines = [_pick(rng, SHOPS).upper()]
        lines += [f"{item} ${price // 100}.{price % 100:02d}" for item, price in zip(items, prices, strict=False)]
        lines.append(f"TOTAL ${sum(prices) // 100}.{sum(prices) % 100:02d}")
        return "\n".join(lines)
    return "\n".join(["NOTICE", *(_sentence(rng) for _ in range(int(rng.integers(1, 3)))), _pick(rng, CODA)])


def render(rng: np.random.Generator, text: str) -> Image.Image:
    size = int(rng.integers(16, 27))
    font = ImageFont.load_default(size=size)
    lines = text.split("\n")
    spacing = size // 2
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    width = int(max(probe.textbbox((0, 0), line, font=font)[2] for line in lines))
    margin = int(rng.integers(16, 40))
    image = Image.new(
        "RGB",
        (width + 2 * margin, len(lines) * (size + spacing) + 2 * margin),
        BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))],
    )
    draw = ImageDraw.Draw(image)
    ink = INKS[int(rng.integers(len(INKS)))]
    for index, line in enumerate(lines):
        draw.text((margin, margin + index * (size + spacing)), line, font=font, fill=ink)
    return image


def build(corpus: Corpus) -> None:
    (spec,) = specs(corpus.prefix)
    rng = corpus.rng("documents")
    docs: list[dict[str, Any]] = []
    for _ in range(DOCUMENTS * corpus.scale):
        text = make_text(rng)
        image = render(rng, text)
        if rng.random() < 0.3:
            docs.append({"text": text, "bytes": jpeg_bytes(image, 88), "ext": "jpg"})
        else:
            docs.append({"text": text, "bytes": png_bytes(image), "ext": "png"})
    page = Path(skimage.data.data_dir, "page.png").read_bytes()
    docs.insert(int(rng.integers(len(docs) + 1)), {"text": PAGE_TEXT, "bytes": page, "ext": "png"})
    text = make_text(rng)
    corrupt = truncated(jpeg_bytes(render(rng, text), 88))
    docs.insert(
        int(rng.integers(len(docs) + 1)), {"text": text, "bytes": corrupt, "ext": "jpg", "broken": "corrupt_image"}
    )

    for start in range(0, len(docs), PER_SHARD):
        file = f"documents/shard-{start // PER_SHARD:05d}.tar"
        members = []
        for row, doc in enumerate(docs[start : start + PER_SHARD]):
            key = f"doc-{start + row:05d}"
            members += [(f"{key}.{doc['ext']}", doc["bytes"]), (f"{key}.txt", doc["text"].encode())]
            if doc.get("broken"):
                corpus.broken.append(
                    {
                        "reason": "corrupt_image",
                        "stage": "clean",
                        **ref(
                            corpus,
                            "documents",
                            file,
                            row=row,
                            member=key,
                            key=key,
                            image_bytes=doc["bytes"],
                            image_member=f"{key}.{doc['ext']}",
                        ),
                        "detail": "JPEG cut after 55% of its bytes: the header parses, decoding fails",
                    }
                )
        corpus.write_tar(file, members)
    corpus.record(spec, "documents", records=len(docs), samples=len(docs), images=len(docs))
