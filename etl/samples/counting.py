"""Shape counting on generated images, as a CSV of one question per row (`vqa_csv`), grouped by
image so both questions about a picture become turns of one sample.

Answers are counted from the drawn shapes, never guessed. One picture is drawn on a noise
background (~2 MB PNG, a fine sample at the default limits; over `ingest.max_image_bytes` in
tests), and one row's image path escapes the image folder.
"""

from __future__ import annotations

import csv
import io
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from etl.samples.corpus import TEST_MAX_IMAGE_BYTES, Corpus, insert_at_random, png_bytes, ref

IMAGES = 100  # per unit of scale
SIDE = 224
GRID = 4
COLORS = {
    "red": (220, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 200, 30),
    "purple": (140, 60, 170),
}
SHAPES = ("circle", "square", "triangle")
UNSAFE_PATH = "../../../etc/passwd"


def specs(prefix: str) -> list[dict[str, Any]]:
    return [
        {
            "name": "counting",
            "format": "vqa_csv",
            "location": f"{prefix}/counting/questions.csv",
            "image_root": f"{prefix}/counting",
            "subset": "counting",
            "category": "Grounding & Counting",
            "fields": {"image": "image", "question": "question", "answer": "answer"},
            "group_by": "image",
        }
    ]


def draw_shapes(rng: np.random.Generator, background: Image.Image) -> list[tuple[str, str]]:
    """Draw 1..9 non-overlapping shapes (one per grid cell); returns their (colour, shape)."""
    draw = ImageDraw.Draw(background)
    cell = background.width // GRID
    count = int(rng.integers(1, 10))
    drawn = []
    for position in rng.choice(GRID * GRID, size=count, replace=False).tolist():
        color, shape = list(COLORS)[int(rng.integers(len(COLORS)))], SHAPES[int(rng.integers(len(SHAPES)))]
        size = int(rng.integers(cell * 4 // 10, cell * 7 // 10))
        x0 = (position % GRID) * cell + int(rng.integers(2, cell - size - 1))
        y0 = (position // GRID) * cell + int(rng.integers(2, cell - size - 1))
        box = (x0, y0, x0 + size, y0 + size)
        if shape == "circle":
            draw.ellipse(box, fill=COLORS[color])
        elif shape == "square":
            draw.rectangle(box, fill=COLORS[color])
        else:
            draw.polygon([(x0 + size / 2, y0), (x0, y0 + size), (x0 + size, y0 + size)], fill=COLORS[color])
        drawn.append((color, shape))
    return drawn


def questions(rng: np.random.Generator, drawn: list[tuple[str, str]]) -> list[tuple[str, str]]:
    color = list(COLORS)[int(rng.integers(len(COLORS)))]
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    second = [
        (f"How many {color} shapes are there?", sum(c == color for c, _ in drawn)),
        (f"How many {shape}s are there?", sum(s == shape for _, s in drawn)),
        (f"How many {color} {shape}s are there?", sum(d == (color, shape) for d in drawn)),
    ][int(rng.integers(3))]
    return [("How many shapes are there in total?", str(len(drawn))), (second[0], str(second[1]))]


def noisy_picture(rng: np.random.Generator) -> tuple[bytes, list[tuple[str, str]]]:
    """A counting picture on a noise background: ~2 MB as PNG, since noise does not compress."""
    side = 4 * SIDE - 56  # 840 px
    noise = rng.integers(120, 256, size=(side, side, 3), dtype=np.uint8)
    image = Image.fromarray(noise, "RGB")
    drawn = draw_shapes(rng, image)
    return png_bytes(image), drawn


def build(corpus: Corpus) -> None:
    (spec,) = specs(corpus.prefix)
    rng = corpus.rng("counting")
    groups: list[dict[str, Any]] = []
    for _ in range(IMAGES * corpus.scale):
        image = Image.new("RGB", (SIDE, SIDE), tuple(int(v) for v in rng.integers(225, 256, size=3)))
        drawn = draw_shapes(rng, image)
        groups.append({"bytes": png_bytes(image), "rows": questions(rng, drawn)})
    data, drawn = noisy_picture(rng)
    too_large = {"bytes": data, "rows": questions(rng, drawn), "broken": "image_too_large"}
    unsafe = {
        "bytes": None,
        "image": UNSAFE_PATH,
        "rows": [("How many shapes are there in total?", "3")],
        "broken": "unsafe_path",
    }
    groups = insert_at_random(rng, groups, [too_large, unsafe])

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["id", "image", "question", "answer"])
    row = 0
    for index, group in enumerate(groups):
        image = group.get("image", f"images/count-{index:05d}.png")
        if group["bytes"] is not None:
            corpus.write(f"counting/{image}", group["bytes"])
        where = ref(
            corpus,
            "counting",
            "counting/questions.csv",
            row=row,
            key=image,
            image=f"counting/{image}" if group["bytes"] is not None else None,
            image_bytes=group["bytes"],
        )
        for question, answer in group["rows"]:
            writer.writerow([f"count-q{row:05d}", image, question, answer])
            row += 1
        if group.get("broken") == "image_too_large":
            corpus.broken.append(
                {
                    "reason": "image_too_large",
                    "stage": "ingest",
                    **where,
                    "bytes": len(group["bytes"]),
                    "requires": {"ingest.max_image_bytes": TEST_MAX_IMAGE_BYTES},
                    "detail": f"{len(group['bytes']):,}-byte PNG; rejected only when ingest.max_image_bytes "
                    f"is lowered to {TEST_MAX_IMAGE_BYTES:,} (a valid sample at the default)",
                }
            )
        elif group.get("broken") == "unsafe_path":
            corpus.broken.append(
                {
                    "reason": "unsafe_path",
                    "stage": "ingest",
                    **where,
                    "image_path": image,
                    "detail": f"image path {image!r} escapes image_root",
                }
            )
    corpus.write("counting/questions.csv", buffer.getvalue().encode())
    corpus.record(
        spec, "counting", records=row, samples=len(groups), images=sum(g["bytes"] is not None for g in groups)
    )
