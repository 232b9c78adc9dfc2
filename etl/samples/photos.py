"""Real photographs shipped inside scikit-image (`skimage.data` files in the package, nothing
downloaded), with hand-written captions and questions.

- `photos`: LLaVA JSON (`conversations` with `<image>` markers) plus an image folder; includes a
  two-image record, a text-only record and a 3000x1200 stereo panorama that cleaning must
  downscale to 2048 px.
- `photo_vqa`: WebDataset shard of `<key>.jpg|png` + `<key>.json` question/answer pairs. Six of its
  images are re-encoded copies of `photos` images: near-duplicates across subsets, the way COCO
  images recur in many public VQA sets.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import skimage.data
from PIL import Image

from etl.samples.corpus import Corpus, insert_at_random, jpeg_bytes, open_image, ref, transform_copy

DATA = Path(skimage.data.data_dir)
PANORAMA_SIZE = (3000, 1200)

# file in skimage's data folder -> (caption, optional follow-up question and answer)
CAPTIONED: dict[str, tuple[str, tuple[str, str] | None]] = {
    "astronaut.png": (
        "A portrait of astronaut Eileen Collins in an orange flight suit, holding a white helmet, with "
        "an American flag on the left and a model of the Space Shuttle on the right.",
        ("What is she holding?", "A white space helmet with a dark visor."),
    ),
    "coffee.png": ("A cup of espresso with golden crema on a red saucer with a spoon, on a wooden table.", None),
    "chelsea.png": (
        "A close-up of a tabby cat's face with yellow-green eyes, white whiskers and a pink nose.",
        ("What animal is this?", "A cat."),
    ),
    "rocket.jpg": (
        "A Falcon 9 rocket standing on its launch pad at night, lit by floodlights and flanked by tall "
        "lightning-protection towers.",
        None,
    ),
    "camera.png": (
        "A black-and-white photograph of a man in a dark coat looking through a camera on a tripod, "
        "standing on a lawn with buildings in the distance.",
        ("Is the photograph in colour?", "No, it is black and white."),
    ),
    "hubble_deep_field.jpg": (
        "The Hubble Deep Field: hundreds of distant galaxies of different shapes and colours "
        "scattered across a black sky.",
        None,
    ),
    "retina.jpg": (
        "A colour fundus photograph of a human retina: the bright optic disc on the left and blood vessels "
        "branching across the orange-red background.",
        None,
    ),
    "ihc.png": (
        "A microscope image of tissue stained by immunohistochemistry: brown-stained glands among "
        "blue-stained cell nuclei.",
        ("Which colour marks the stained glands?", "Brown."),
    ),
    "moon.png": ("A grayscale close-up of the surface of the Moon with small craters and dark patches.", None),
    "horse.png": ("A black silhouette of a horse standing in profile, facing right, on a white background.", None),
    "cell.png": ("A grayscale microscope image of a single bright round cell on a dark, grainy background.", None),
    "grass.png": ("A grayscale close-up texture of grass blades.", None),
    "clock_motion.png": ("A grayscale photograph of a round wall clock, blurred by camera motion.", None),
}
PROMPTS = [
    "Describe this image.",
    "What is shown in this picture?",
    "Write a short caption for the image.",
    "Describe the photo in one sentence.",
]

# photo_vqa: (skimage file, transformation or None for a fresh JPEG, question, answer)
PHOTO_VQA = [
    ("astronaut.png", "resize_0.75+jpeg_q80", "What colour is the astronaut's suit?", "Orange."),
    ("coffee.png", "jpeg_q85", "What drink is in the cup?", "Espresso."),
    ("chelsea.png", "resize_0.8+jpeg_q85", "What colour are the cat's eyes?", "Yellow-green."),
    ("rocket.jpg", "jpeg_q75", "Was the photo taken during the day or at night?", "At night."),
    ("camera.png", "jpeg_q85", "What is the man looking through?", "A camera on a tripod."),
    (
        "hubble_deep_field.jpg",
        "resize_0.6+jpeg_q85",
        "What are the small bright objects in this image?",
        "Distant galaxies.",
    ),
    ("coins.png", None, "How many coins are in the picture?", "24"),
    ("color.png", None, "Which colour is at the top of the colour wheel?", "Red."),
    ("logo.png", None, "What animal appears in the logo?", "A snake."),
]


def specs(prefix: str) -> list[dict[str, Any]]:
    return [
        {
            "name": "photos",
            "format": "llava_json",
            "location": f"{prefix}/photos/photos.json",
            "image_root": f"{prefix}/photos",
            "subset": "photos",
            "category": "Captioning & Knowledge",
        },
        {
            "name": "photo_vqa",
            "format": "webdataset",
            "location": f"{prefix}/photo_vqa",
            "subset": "photo_vqa",
            "category": "General VQA",
            "fields": {"question": "question", "answer": "answer"},
        },
    ]


def panorama() -> bytes:
    """The stereo motorcycle pair side by side, scaled to a real 3000x1200 photograph (JPEG)."""
    half = (PANORAMA_SIZE[0] // 2, PANORAMA_SIZE[1])
    frames = []
    for name in ("motorcycle_left.png", "motorcycle_right.png"):
        image = Image.open(DATA / name).convert("RGB")
        scale = half[1] / image.height
        image = image.resize((round(image.width * scale), half[1]), Image.Resampling.BICUBIC)
        left = (image.width - half[0]) // 2
        frames.append(image.crop((left, 0, left + half[0], half[1])))
    canvas = Image.new("RGB", PANORAMA_SIZE)
    canvas.paste(frames[0], (0, 0))
    canvas.paste(frames[1], (half[0], 0))
    return jpeg_bytes(canvas, 80)


def _turns(first: str, caption: str, follow_up: tuple[str, str] | None, images: int = 1) -> list[dict[str, str]]:
    turns = [{"from": "human", "value": "<image>\n" * images + first}, {"from": "gpt", "value": caption}]
    if follow_up:
        turns += [{"from": "human", "value": follow_up[0]}, {"from": "gpt", "value": follow_up[1]}]
    return turns


def build(corpus: Corpus) -> None:
    photos_spec, vqa_spec = specs(corpus.prefix)
    rng = corpus.rng("photos")
    originals: dict[str, dict[str, Any]] = {}
    records: list[dict[str, Any]] = []
    for index, (name, (caption, follow_up)) in enumerate(CAPTIONED.items()):
        data = (DATA / name).read_bytes()
        image = f"images/{name}"
        corpus.write(f"photos/{image}", data)
        record = {
            "id": f"photo-{index:03d}",
            "image": image,
            "conversations": _turns(PROMPTS[int(rng.integers(len(PROMPTS)))], caption, follow_up),
        }
        originals[name] = {"record": record, "image": image, "bytes": data}
        records.append(record)

    pair = []
    for name in ("brick.png", "gravel.png"):
        data = (DATA / name).read_bytes()
        corpus.write(f"photos/images/{name}", data)
        pair.append(f"images/{name}")
    records.append(
        {
            "id": "photo-pair-000",
            "image": pair,
            "conversations": _turns(
                "What is the difference between these two textures?",
                "The first shows a brick wall laid in regular rows; the second shows loose gravel stones.",
                None,
                images=2,
            ),
        }
    )
    records.append(
        {
            "id": "photo-text-000",
            "conversations": _turns(
                "What is the Hubble Deep Field?",
                "An image of a small region of sky taken by the Hubble Space Telescope over many days, showing thousands "
                "of very distant galaxies.",
                None,
                images=0,
            ),
        }
    )
    wide = panorama()
    corpus.write("photos/images/motorcycle_stereo.jpg", wide)
    oversize = {
        "id": "photo-stereo-000",
        "image": "images/motorcycle_stereo.jpg",
        "conversations": _turns(
            "Describe this image.",
            "Two photographs of a red motorcycle parked in a garage with shelves and cardboard "
            "boxes, taken from slightly different viewpoints and shown side by side.",
            None,
        ),
    }
    missing_field = {"id": "photo-broken-000", "image": "images/coffee.png"}
    no_turns = {
        "id": "photo-broken-001",
        "image": "images/moon.png",
        "conversations": [{"from": "human", "value": "<image>\nDescribe this picture."}],
    }
    records = insert_at_random(rng, records, [oversize, missing_field, no_turns])
    corpus.write("photos/photos.json", json.dumps(records, ensure_ascii=False, indent=1).encode())

    def where(record: dict[str, Any], image_bytes: bytes | None) -> dict[str, Any]:
        image = record.get("image")
        return ref(
            corpus,
            "photos",
            "photos/photos.json",
            row=records.index(record),
            key=record["id"],
            image=f"photos/{image}" if isinstance(image, str) else None,
            image_bytes=image_bytes,
        )

    corpus.downscale.append({**where(oversize, wide), "size": list(PANORAMA_SIZE), "expected_size": [2048, 819]})
    corpus.broken.append(
        {
            "reason": "missing_field",
            "stage": "ingest",
            **where(missing_field, None),
            "detail": "record has no `conversations`",
        }
    )
    corpus.broken.append(
        {
            "reason": "no_turns",
            "stage": "ingest",
            **where(no_turns, None),
            "detail": "only a human message: no (user, assistant) pair",
        }
    )
    image_files = len(CAPTIONED) + len(pair) + 1
    corpus.record(photos_spec, "photos", records=len(records), samples=len(records), images=image_files)

    # photo_vqa: webdataset with JSON question/answer members
    members = []
    for row, (name, transformation, question, answer) in enumerate(PHOTO_VQA):
        key = f"pvqa-{row:04d}"
        source = (DATA / name).read_bytes()
        if transformation:
            data, extension = transform_copy(source, transformation)
        else:
            data, extension = jpeg_bytes(open_image(source), 90), "jpg"
        members += [
            (f"{key}.{extension}", data),
            (f"{key}.json", json.dumps({"question": question, "answer": answer}).encode()),
        ]
        if transformation:
            original = originals[name]
            corpus.near_duplicates.append(
                {
                    "a": where(original["record"], original["bytes"]),
                    "b": ref(
                        corpus,
                        "photo_vqa",
                        "photo_vqa/shard-00000.tar",
                        row=row,
                        member=key,
                        key=key,
                        image_bytes=data,
                        image_member=f"{key}.{extension}",
                    ),
                    "transformation": transformation,
                    "must_find": True,  # photographs: SSCD int8 scores these copies 0.97-0.99
                }
            )
    corpus.write_tar("photo_vqa/shard-00000.tar", members)
    corpus.record(vqa_spec, "photo_vqa", records=len(PHOTO_VQA), samples=len(PHOTO_VQA), images=len(PHOTO_VQA))
