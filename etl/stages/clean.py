"""Cleaning, bronze -> silver: FineVision's rules plus the ones it left to the implementer.

Per sample, in one Arrow UDF (so each image is decoded once):
- every image is decoded and validated (pixel count checked on the header first); a corrupt or
  bomb image sends the whole sample to quarantine;
- images whose longest side exceeds `max_side` are downscaled to it, keeping aspect ratio; modes
  other than RGB/L/RGBA are converted; untouched images keep their original bytes;
- texts are normalised (NFC, control characters, whitespace); empty turns are dropped; turns whose
  question + answer exceed `max_turn_tokens` SmolLM2 tokens are dropped; a sample with no turn
  left goes to quarantine.
Rows in = rows to silver + rows to quarantine.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import IntegerType, StringType, StructField, StructType

from etl.schema import SAMPLES, require_columns
from udfs.images import ImageRejected, ImageRules, clean_image
from udfs.tokens import count_tokens, load_tokenizer, normalise_text

CLEANED = StructType(
    [
        *SAMPLES.fields,
        StructField("reject_reason", StringType()),
        StructField("reject_detail", StringType()),
        StructField("raw", StringType()),
        StructField("turns_dropped_empty", IntegerType()),
        StructField("turns_dropped_too_long", IntegerType()),
        StructField("images_resized", IntegerType()),
    ]
)


@dataclass(frozen=True)
class CleanRules:
    images: ImageRules
    max_turn_tokens: int
    tokenizer_json: str


def clean_sample(row: dict, rules: CleanRules) -> dict:
    """One bronze row -> the silver row, or the same row with a reject reason."""
    out = dict(
        row,
        reject_reason=None,
        reject_detail=None,
        raw=None,
        turns_dropped_empty=0,
        turns_dropped_too_long=0,
        images_resized=0,
    )
    images = []
    for index, image in enumerate(row["images"] or []):
        try:
            cleaned = clean_image(image["bytes"], rules.images)
        except ImageRejected as exc:
            return _reject(out, exc.reason, f"image {index} ({image.get('path')}): {exc}")
        if cleaned.changed:
            out["images_resized"] += 1
            image = dict(image, bytes=cleaned.data, image_id=hashlib.sha256(cleaned.data).hexdigest())
        images.append(dict(image, width=cleaned.width, height=cleaned.height))
    out["images"] = images

    turns = [(normalise_text(t["user"]), normalise_text(t["assistant"])) for t in row["texts"] or []]
    non_empty = [(u, a) for u, a in turns if u and a]
    out["turns_dropped_empty"] = len(turns) - len(non_empty)
    tokenizer = load_tokenizer(rules.tokenizer_json)
    counts = count_tokens(tokenizer, [text for turn in non_empty for text in turn])
    kept = [
        {"user": u, "assistant": a}
        for i, (u, a) in enumerate(non_empty)
        if counts[2 * i] + counts[2 * i + 1] <= rules.max_turn_tokens
    ]
    out["turns_dropped_too_long"] = len(non_empty) - len(kept)
    out["texts"] = kept
    if not kept:
        return _reject(
            out,
            "no_turns_left",
            f"{len(turns)} turn(s): {out['turns_dropped_empty']} empty, {out['turns_dropped_too_long']} over {rules.max_turn_tokens} tokens",
        )
    return out


def _reject(out: dict, reason: str, detail: str) -> dict:
    raw = {
        "sample_id": out["sample_id"],
        "images": [{"path": i.get("path"), "image_id": i.get("image_id")} for i in out["images"] or []],
        "texts": [
            {"user": (t["user"] or "")[:200], "assistant": (t["assistant"] or "")[:200]} for t in out["texts"] or []
        ],
    }
    return dict(out, reject_reason=reason, reject_detail=detail, raw=json.dumps(raw, ensure_ascii=False))


def clean_samples(bronze: DataFrame, rules: CleanRules) -> DataFrame:
    """Bronze rows -> CLEANED rows (silver rows and rejections, told apart by reject_reason)."""
    require_columns(bronze, SAMPLES.fieldNames(), "clean")
    from pyspark.sql.pandas.types import to_arrow_schema

    arrow_schema = to_arrow_schema(CLEANED)

    def clean(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            rows = [clean_sample(row, rules) for row in batch.to_pylist()]
            yield pa.RecordBatch.from_pylist(rows, schema=arrow_schema)

    return bronze.select(*SAMPLES.fieldNames()).mapInArrow(clean, CLEANED)


def silver_rows(cleaned: DataFrame) -> DataFrame:
    return cleaned.filter(F.col("reject_reason").isNull()).select(*SAMPLES.fieldNames())
