"""The labelled set of `bench/decontam_recall.py`: benchmark images, their edited copies and
same-template look-alikes, made from the project's own generators (etl/samples) and scikit-image.

Benchmark images of six kinds: bar/line/pie charts, documents, photographs, phone GUI screens,
easy-VQA shapes (the 64 px flat images of the sample corpus' benchmark) and sparse pages (a line or
two of text on a mostly blank page). Photographs are crops at random places and sizes of
scikit-image's photographs, or procedural scenes (a sky, a textured ground, shapes drawn by the
sample corpus' counting generator). Seeds below EVALUATION_FROM (tuning seeds) crop only files of
the tuning pool, seeds from it on (evaluation seeds) only files of the evaluation pool, and a
procedural scene is seeded by its seed: tuning and evaluation seeds share no photograph.

Every benchmark image has one training copy per edit family (EDITS) and same-template negatives
that copy nothing (the chart with other data, the document or page layout with other text, the
phone screen with other rows or apps, another crop of the photograph overlapping it by about a
tenth, the scene with other objects, five easy-VQA training images of the shape's colour and shape).
Copies and negatives draw their text the same way (`training_text`): the benchmark question half of
the time, else a generic prompt, so text evidence says nothing about which is which.
"""

from __future__ import annotations

import functools
import io
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFont

from etl.samples import charts, counting, documents, gui

EDITS = (
    "identity",
    "jpeg_reencode",
    "webp",
    "png_jpeg",
    "crop",
    "downscale_jpeg",
    "brightness_contrast",
    "gamma",
    "mirror",
    "perspective",
    "text_overlay",
    "two_bands",
    "padding",
    "screenshot",
)
NEAR_LOSSLESS = ("identity", "jpeg_reencode", "webp", "png_jpeg")
KINDS = ("chart", "document", "photo", "gui", "shape", "page")
EVALUATION_FROM = 25  # seeds from here on are evaluation seeds: their photographs come from EVALUATION_POOL
SKIMAGE_PHOTOS = (
    "astronaut.png",
    "brick.png",
    "camera.png",
    "cell.png",
    "chelsea.png",
    "clock_motion.png",
    "coffee.png",
    "coins.png",
    "color.png",
    "grass.png",
    "gravel.png",
    "hubble_deep_field.jpg",
    "ihc.png",
    "microaneurysms.png",
    "moon.png",
    "motorcycle_left.png",
    "page.png",
    "retina.jpg",
    "rocket.jpg",
    "text.png",
)
TUNING_POOL = SKIMAGE_PHOTOS[0::2]
EVALUATION_POOL = SKIMAGE_PHOTOS[1::2]
PROMPTS = ("What is shown here?", "Describe this image.", "Answer the question about the picture.", "Look closely.")
SHAPE_NEGATIVES = 5  # per benchmark shape image: easy-VQA has hundreds of each colour and shape


@dataclass
class Image_:
    name: str
    data: bytes
    text: str | None
    kind: str
    edit: str | None = None  # edit family of a copy; "negative" for a hard negative; None for a benchmark image
    original: int | None = None  # benchmark row this training image was made from
    source: str | None = None  # a benchmark photograph's origin: "skimage:FILE@box" or "scene:SEED/INDEX"


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def webp(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="WEBP", quality=quality)
    return buffer.getvalue()


def rgb(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


def pool_of(seed: int) -> tuple[str, ...]:
    return EVALUATION_POOL if seed >= EVALUATION_FROM else TUNING_POOL


def training_text(rng: np.random.Generator, question: str) -> str:
    """A training image's text, copy or look-alike alike: the benchmark question half of the time."""
    return question if rng.random() < 0.5 else PROMPTS[int(rng.integers(len(PROMPTS)))]


# ---- benchmark images and their same-template negatives ----------------------------------------

Labelled = tuple[bytes, str]  # an image and its question
Made = tuple[Labelled, list[bytes], str | None]  # a benchmark image, its negatives, its source


def chart_pair(rng: np.random.Generator, index: int, seed: int) -> Made:
    kind = charts.KINDS[(seed * 7 + index) % len(charts.KINDS)]  # other chart kinds under another seed
    chart = charts.make_chart(rng, charts.BENCH_THEMES, charts.BENCH_METRICS, kind)
    other = dict(chart)
    if chart["kind"] == "pie":
        while other["values"] == chart["values"]:
            other["values"] = charts.make_chart(rng, charts.BENCH_THEMES, charts.BENCH_METRICS, "pie")["values"][
                : len(chart["labels"])
            ]
            other["values"] += [4] * (len(chart["labels"]) - len(other["values"]))
    else:
        other["values"] = rng.permutation(chart["values"]).tolist()
        while other["values"] == chart["values"]:
            other["values"] = rng.permutation(chart["values"]).tolist()
        other["values"] = [max(5, v + int(rng.integers(-15, 16))) for v in other["values"]]
    return (charts.render(chart), chart["qa"][0][0]), [charts.render(other)], None


def document_pair(rng: np.random.Generator, index: int, seed: int) -> Made:
    style = int(rng.integers(1 << 30))
    text = documents.make_text(rng)
    other = documents.make_text(rng)
    for _ in range(50):  # the same kind of document (memo, receipt, notice) with other text
        if (
            other != text
            and other.split("\n")[0].isupper() == text.split("\n")[0].isupper()
            and text.startswith("MEMO") == other.startswith("MEMO")
            and text.startswith("NOTICE") == other.startswith("NOTICE")
        ):
            break
        other = documents.make_text(rng)
    question = documents.TEMPLATES[(seed * 7 + index) % len(documents.TEMPLATES)]
    question = question if isinstance(question, str) else "What does the document say?"
    first = documents.render(np.random.default_rng(style), text)
    second = documents.render(np.random.default_rng(style), other)
    return (png(first), question), [png(second)], None


def page_pair(rng: np.random.Generator, index: int, seed: int) -> Made:
    """A sparse page: a header, one or two lines and a page number on a mostly blank A4-like page;
    the negative is the same layout with other lines."""
    width = int(rng.integers(560, 700))
    height = round(width * 1.414)
    size = int(rng.integers(14, 22))
    top = int(rng.integers(60, height // 2))
    left = int(rng.integers(40, 90))
    header = documents._pick(rng, documents.SUBJECTS)
    number = int(rng.integers(2, 300))

    def page(lines: list[str]) -> bytes:
        image = Image.new("RGB", (width, height), documents.BACKGROUNDS[index % len(documents.BACKGROUNDS)])
        draw = ImageDraw.Draw(image)
        font = ImageFont.load_default(size=size)
        draw.text((left, 40), header, fill=(90, 90, 90), font=ImageFont.load_default(size=size - 4))
        for row, line in enumerate(lines):
            draw.text((left, top + row * int(size * 1.6)), line, fill=(20, 20, 20), font=font)
        draw.text((width // 2 - size, height - 50), str(number), fill=(90, 90, 90), font=font)
        return png(image)

    count = 1 + index % 2
    lines = [documents._sentence(rng)[:60] for _ in range(count)]
    others = [documents._sentence(rng)[:60] for _ in range(count)]
    while others == lines:
        others = [documents._sentence(rng)[:60] for _ in range(count)]
    return (page(lines), "What does the page say?"), [page(others)], None


def _skimage_photo(rng: np.random.Generator, name: str) -> tuple[Image.Image, Image.Image, str]:
    """Two crops of one scikit-image photograph at a random height, side by side across its width
    and overlapping by 4-16% of it: (benchmark crop, negative crop, source)."""
    import skimage

    photo = Image.open(Path(skimage.data_dir) / name).convert("RGB")
    width, height = photo.size
    keep_w = round(width * rng.uniform(0.52, 0.58))
    keep_h = round(height * rng.uniform(0.6, 1.0))
    tops = rng.integers(0, height - keep_h + 1, 2)
    boxes = [
        (0, int(tops[0]), keep_w, int(tops[0]) + keep_h),
        (width - keep_w, int(tops[1]), width, int(tops[1]) + keep_h),
    ]
    if rng.random() < 0.5:
        boxes.reverse()
    return photo.crop(boxes[0]), photo.crop(boxes[1]), f"skimage:{name}@{boxes[0]}"


def scene(background_seed: int, objects_seed: int) -> Image.Image:
    """A procedural outdoor scene: a sky gradient, a ground of smoothed noise, ellipses and the
    counting generator's shapes. The background comes from one seed, the objects from another."""
    rng = np.random.default_rng(background_seed)
    width, height = int(rng.integers(380, 520)), int(rng.integers(300, 400))
    horizon = int(height * rng.uniform(0.35, 0.65))
    sky = rng.integers(60, 256, (2, 3)).astype(np.float64)
    ramp = np.linspace(0, 1, horizon)[:, None, None]
    pixels = np.empty((height, width, 3))
    pixels[:horizon] = sky[0] * (1 - ramp) + sky[1] * ramp
    coarse = rng.uniform(0, 1, (6, 8, 3))
    ground = np.asarray(
        Image.fromarray((coarse * 255).astype(np.uint8)).resize((width, height - horizon), Image.Resampling.BICUBIC)
    )
    tint = rng.integers(40, 200, 3)
    pixels[horizon:] = 0.5 * ground + 0.5 * tint + rng.normal(0, 8, (height - horizon, width, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    rng = np.random.default_rng(objects_seed)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 8))):
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        rx, ry = int(rng.integers(15, 70)), int(rng.integers(10, 50))
        draw.ellipse((x - rx, y - ry, x + rx, y + ry), fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    counting.draw_shapes(rng, image)
    return image


def photo_pair(rng: np.random.Generator, index: int, seed: int) -> Made:
    """Even indexes: a crop of a photograph of this seed's pool (each file once a seed); odd: a
    procedural scene, its negative the same background with other objects."""
    question = "Describe this image."
    if index % 2 == 0:
        files = np.random.default_rng([seed, 7]).permutation(len(pool_of(seed)))
        name = pool_of(seed)[int(files[(index // 2) % len(files)])]
        shown, negative, source = _skimage_photo(rng, name)
    else:
        background, objects, other = (int(v) for v in rng.integers(1 << 30, size=3))
        shown, negative = scene(background, objects), scene(background, other)
        source = f"scene:{seed}/{index}"
    # photographs are JPEGs in benchmarks, so a PNG re-save of one is a format change too
    return (jpeg(shown, 92), question), [jpeg(negative, 92)], source


def gui_pair(rng: np.random.Generator, index: int, seed: int) -> Made:
    """A phone screen and the same screen with other content: an app's list with other rows, or the
    home screen with other apps."""
    seeds = int(rng.integers(1 << 30)), int(rng.integers(1 << 30))
    if index % 2:
        name = gui.APPS[(seed * 7 + index) % len(gui.APPS)]
        screens = [gui._mobile_app(name, random.Random(s)) for s in seeds]
        while screens[1].elements == screens[0].elements:
            screens[1] = gui._mobile_app(name, random.Random(int(rng.integers(1 << 30))))
        question = f"Which rows does the {name} screen list?"
    else:
        screens = [gui._mobile_home(random.Random(s)) for s in seeds]
        while screens[1].elements == screens[0].elements:
            screens[1] = gui._mobile_home(random.Random(int(rng.integers(1 << 30))))
        question = "Which apps are on the home screen?"
    return (gui.draw_png(screens[0]), question), [gui.draw_png(screens[1])], None


@functools.lru_cache(maxsize=2)
def _shapes(split: str) -> dict[str, list[tuple[int, str]]]:
    """easy-VQA images of one split by (shape, colour): [(image id, a question about it)]."""
    import easy_vqa

    questions, answers, image_ids = easy_vqa.get_test_questions() if split == "test" else easy_vqa.get_train_questions()
    shape: dict[int, str] = {}
    colour: dict[int, str] = {}
    question_of: dict[int, str] = {}
    for question, answer, image_id in zip(questions, answers, image_ids, strict=True):
        if answer in ("circle", "rectangle", "triangle"):
            shape[image_id] = answer
        elif answer not in ("yes", "no"):
            colour[image_id] = answer
        question_of.setdefault(image_id, question)
    out: dict[str, list[tuple[int, str]]] = {}
    for image_id in sorted(set(shape) & set(colour)):
        out.setdefault(f"{colour[image_id]} {shape[image_id]}", []).append((image_id, question_of[image_id]))
    return out


def shape_pair(rng: np.random.Generator, index: int, seed: int) -> Made:
    """An easy-VQA test image and SHAPE_NEGATIVES training images of the same shape and colour
    elsewhere, at other sizes: one flat background and one shape, so many training images look alike."""
    import easy_vqa

    test, train = _shapes("test"), _shapes("train")
    kind = sorted(set(test) & set(train))[int(rng.integers(len(set(test) & set(train))))]
    image_id, question = test[kind][int(rng.integers(len(test[kind])))]
    chosen = rng.choice(len(train[kind]), size=SHAPE_NEGATIVES, replace=False).tolist()
    train_paths = easy_vqa.get_train_image_paths()
    negatives = [Path(train_paths[train[kind][i][0]]).read_bytes() for i in chosen]
    return (Path(easy_vqa.get_test_image_paths()[image_id]).read_bytes(), question), negatives, None


MAKERS = {
    "chart": chart_pair,
    "document": document_pair,
    "photo": photo_pair,
    "gui": gui_pair,
    "shape": shape_pair,
    "page": page_pair,
}


# ---- edits ---------------------------------------------------------------------------------------


def _band(image: Image.Image, rng: np.random.Generator, top: int) -> None:
    width, height = image.size
    draw = ImageDraw.Draw(image)
    size = max(10, height // 14)
    draw.rectangle((0, top, width, top + int(size * 1.6)), fill=(20, 20, 20))
    text = f"sample {int(rng.integers(1000))} - www.example.org"
    draw.text((size // 2, top + size // 4), text, fill="white", font=ImageFont.load_default(size=size))


def _is_jpeg(data: bytes) -> bool:
    return data[:3] == b"\xff\xd8\xff"


def edit(rng: np.random.Generator, data: bytes, family: str) -> bytes:
    image = rgb(data)
    width, height = image.size
    if family == "identity":
        return data
    if family == "jpeg_reencode":
        return jpeg(image, int(rng.integers(85, 96)))
    if family == "webp":
        return webp(image, int(rng.integers(85, 96)))
    if family == "png_jpeg":  # a JPEG saved as PNG, a PNG saved as JPEG
        return png(image) if _is_jpeg(data) else jpeg(image, int(rng.integers(90, 96)))
    if family == "crop":
        fx, fy = rng.uniform(0.8, 0.95, 2)
        w, h = round(width * fx), round(height * fy)
        left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
        return png(image.crop((left, top, left + w, top + h)))
    if family == "downscale_jpeg":
        scale = rng.uniform(0.3, 0.7)
        small = image.resize((max(8, round(width * scale)), max(8, round(height * scale))), Image.Resampling.BICUBIC)
        return jpeg(small, int(rng.integers(50, 86)))
    if family == "brightness_contrast":
        image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.8, 1.2))
        return png(ImageEnhance.Contrast(image).enhance(rng.uniform(0.8, 1.2)))
    if family == "gamma":
        gamma = rng.uniform(0.6, 0.8) if rng.random() < 0.5 else rng.uniform(1.25, 1.6)
        table = [round(255 * (v / 255) ** gamma) for v in range(256)] * 3
        return png(image.point(table))
    if family == "mirror":
        return png(image.transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    if family == "perspective":  # each corner moved by up to 4% of the sides
        # PIL's QUAD takes the source's upper left, lower left, lower right and upper right corners
        corners = np.array([(0, 0), (0, height), (width, height), (width, 0)], np.float64)
        moved = corners + rng.uniform(-0.04, 0.04, (4, 2)) * [width, height]
        return png(
            image.transform(image.size, Image.Transform.QUAD, moved.flatten().tolist(), Image.Resampling.BILINEAR)
        )
    if family == "text_overlay":
        size = max(10, height // 14)
        _band(image, rng, int(rng.integers(0, max(1, height - 2 * size))))
        return png(image)
    if family == "two_bands":  # a caption band at the top and one at the bottom
        size = max(10, height // 14)
        _band(image, rng, 0)
        _band(image, rng, height - int(size * 1.6))
        return png(image)
    if family == "padding":
        pads = (rng.uniform(0.05, 0.2, 4) * [width, height, width, height]).round().astype(int)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        canvas = Image.new("RGB", (width + pads[0] + pads[2], height + pads[1] + pads[3]), colour)
        canvas.paste(image, (int(pads[0]), int(pads[1])))
        return png(canvas)
    if family == "screenshot":
        scale = rng.uniform(0.6, 1.4)
        shown = image.resize((round(width * scale), round(height * scale)), Image.Resampling.BILINEAR)
        margin = int(rng.integers(20, 60))
        canvas = Image.new("RGB", (shown.width + 2 * margin, shown.height + 2 * margin + 30), (236, 236, 236))
        draw = ImageDraw.Draw(canvas)
        draw.rectangle((0, 0, canvas.width, 30), fill=(60, 60, 70))
        draw.text((10, 8), "image viewer", fill="white", font=ImageFont.load_default(size=13))
        canvas.paste(shown, (margin, 30 + margin))
        return png(canvas)
    raise ValueError(f"unknown edit {family!r}")


def labelled_set(
    seed: int, per_kind: int, kinds: tuple[str, ...] = KINDS, edits: tuple[str, ...] = EDITS
) -> tuple[list[Image_], list[Image_]]:
    """(benchmark images, training images): every benchmark image has one copy per edit family and
    its same-template negatives."""
    rng = np.random.default_rng(seed)
    bench: list[Image_] = []
    train: list[Image_] = []
    for kind in kinds:
        for index in range(per_kind):
            (original, question), negatives, source = MAKERS[kind](rng, index, seed)
            row = len(bench)
            bench.append(Image_(f"{kind}{index}", original, question, kind, source=source))
            for number, negative in enumerate(negatives, start=1):
                name = f"{kind}{index}-negative{number if number > 1 else ''}"
                train.append(Image_(name, negative, training_text(rng, question), kind, "negative", row))
            for family in edits:
                copy = edit(rng, original, family)
                train.append(Image_(f"{kind}{index}-{family}", copy, training_text(rng, question), kind, family, row))
    return bench, train


def counts(bench: list[Image_], train: list[Image_]) -> str:
    """The set's real counts, as the report prints them."""
    copies = sum(image.edit not in (None, "negative") for image in train)
    negatives = sum(image.edit == "negative" for image in train)
    kinds = ", ".join(f"{kind} {sum(b.kind == kind for b in bench)}" for kind in dict.fromkeys(b.kind for b in bench))
    return (
        f"{len(bench)} benchmark images ({kinds}), {len(train)} training images: {copies} copies "
        f"({len({i.edit for i in train} - {'negative'})} edit families), {negatives} same-template negatives"
    )
