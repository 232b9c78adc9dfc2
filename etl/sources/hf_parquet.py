"""Hugging Face datasets parquet exports, one shard per row group.

`options.layout: finevision` (default; The Cauldron uses it too): `images` list<struct<bytes,
path>> and `texts` list<struct<user, assistant>>. `options.layout: columns`: one image column
(`fields.image`: struct<bytes, path> or binary) and `fields.question`/`fields.answer`, or
`fields.caption` with `question_templates`. `options.layout: benchmark`: a benchmark test set's own
columns (see `etl.benchmarks.BenchmarkUnit`); only the `fields` named are read: `image` (with
`options.images`: single, list or numbered columns), `context`, `question`, `options` (a list
column, or `options.option_columns`), `answer` (`options.answer_format`: text, index or letter;
`options.answer_key` for lists of structs) and `id`. The question carries the lettered options;
each distinct answer is a turn; an item without answers keeps one turn with an empty answer.
A GUI grounding set (ScreenSpot-V2) names `bbox`, `platform` and `element_type` instead of an
answer: its one answer is the element's box in fractions of the screenshot, with the platform and
element type (`etl.sources.gui.screenspot.screenspot_reference`; `options.bbox_format`: xywh or
xyxy, `options.bbox_units`: pixels or fraction), which `click_accuracy` scores.
"""

from __future__ import annotations

import ast
import io
import posixpath
from collections.abc import Iterator
from typing import Literal

import pyarrow.parquet as pq
from pydantic import model_validator

from etl.sources.base import (
    FormatOptions,
    RawSample,
    ReadContext,
    Reason,
    Record,
    Rejected,
    Shard,
    SourceRef,
    TooLarge,
    clean_text,
    item_id_of,
    iter_with_rejects,
    template_for,
)
from etl.sources.gui.actions import BboxFormat
from etl.sources.gui.screenspot import BboxUnits, screenspot_reference


class ParquetOptions(FormatOptions):
    """`options:` of `hf_parquet` (see the module docstring); all but `layout` are read by layout
    `benchmark` only."""

    layout: Literal["finevision", "columns", "benchmark"] = "finevision"
    images: Literal["single", "list", "numbered"] = "single"
    option_columns: list[str] | None = None
    answer_format: Literal["text", "index", "letter"] = "text"
    answer_key: str | None = None
    bbox_format: BboxFormat = "xywh"
    bbox_units: BboxUnits = "pixels"

    @model_validator(mode="after")
    def _benchmark_only(self) -> ParquetOptions:
        others = sorted(self.model_fields_set - {"layout"})
        if others and self.layout != "benchmark":
            raise ValueError(f"{', '.join(others)}: read by layout benchmark only, not {self.layout}")
        return self


def row_group_count(files, path: str) -> int:
    with files.open_input(path) as handle:
        return pq.ParquetFile(handle).num_row_groups


def _image(ctx: ReadContext, value) -> tuple[bytes, str | None]:
    path: str | None = None
    if isinstance(value, (bytes, bytearray)):
        data = bytes(value)
    elif isinstance(value, dict):
        embedded, path = value.get("bytes"), value.get("path")
        if embedded is None:
            if not path:
                raise KeyError("bytes (image has neither bytes nor path)")
            return ctx.read_image(path), path
        data = bytes(embedded)
    else:
        raise TypeError(f"image must be a struct<bytes, path> or binary, got {type(value).__name__}")
    if len(data) > ctx.ingest.max_image_bytes:
        raise TooLarge(f"embedded image of {len(data)} bytes over the limit")
    return data, path


def _finevision_record(ctx: ReadContext, record: dict):
    images_value = record[ctx.spec.field("images")] or []
    texts_value = record[ctx.spec.field("texts")]
    if not isinstance(texts_value, list) or not isinstance(images_value, list):
        raise TypeError("images and texts must be lists")
    turns = [(clean_text(t["user"]), clean_text(t["assistant"])) for t in texts_value]
    return [_image(ctx, v) for v in images_value], turns


def _columns_record(ctx: ReadContext, record: dict, key: str):
    spec = ctx.spec
    image = _image(ctx, record[spec.field("image")])
    if "caption" in spec.fields:
        if not spec.question_templates:
            raise KeyError("question_templates (required with fields.caption)")
        turn = (template_for(spec.question_templates, key), clean_text(record[spec.fields["caption"]]))
    else:
        turn = (clean_text(record[spec.field("question")]), clean_text(str(record[spec.field("answer")])))
    return [image], [turn]


def _benchmark_images(ctx: ReadContext, options: ParquetOptions, record: dict) -> list[tuple[bytes, str | None]]:
    column = ctx.spec.fields.get("image")
    if column is None:
        return []
    mode = options.images
    if mode == "numbered":  # image_1, image_2, ...: every column of the prefix, in number order
        prefix = column.rstrip("0123456789")
        numbered = [k for k in record if k.startswith(prefix) and k[len(prefix) :].isdigit()]
        values = [record[k] for k in sorted(numbered, key=lambda k: int(k[len(prefix) :]))]
    elif mode == "list":  # a single image where a list is expected (MMT's two sets share one reader) is one image
        value = record[column]
        values = value if isinstance(value, list) else [value]
    else:
        values = [record[column]]
    return [_image(ctx, v) for v in values if not _no_image(v)]


def _no_image(value) -> bool:
    """A null cell, or a null struct<bytes, path> (an unused image_N column, a text-only question)."""
    return value is None or (isinstance(value, dict) and value.get("bytes") is None and not value.get("path"))


def _text_of(value, what: str) -> str:
    """A scalar cell as text; null and pandas' "nan" are empty."""
    if value is None:
        return ""
    if isinstance(value, (list, dict, bytes)):
        raise TypeError(f"{what} must be text or a number, got {type(value).__name__}")
    text = clean_text(value if isinstance(value, str) else str(value)).strip()
    return "" if text == "nan" else text


def _benchmark_options(spec, parquet_options: ParquetOptions, record: dict) -> list[tuple[str, str]]:
    """(letter, text) of each option; letters follow the options' positions (A for the first)."""
    columns = parquet_options.option_columns
    if columns:
        values = [record[c] for c in columns]
    elif "options" in spec.fields:
        value = record[spec.fields["options"]]
        if isinstance(value, str):  # MMMU writes its options list as Python text: "['a', 'b']"
            value = ast.literal_eval(value) if value.strip().startswith("[") else [value]
        values = value or []
        if not isinstance(values, list):
            raise TypeError(f"field {spec.fields['options']!r} must be a list of options, got {type(values).__name__}")
    else:
        return []
    options = [(chr(ord("A") + i), _text_of(v, "an option")) for i, v in enumerate(values)]
    return [(letter, text) for letter, text in options if text]


def _resolve(answer: str, options: list[tuple[str, str]], answer_format: str) -> str | None:
    """The option an index or letter answer names, or None when it names none."""
    by_letter = dict(options)
    if answer_format == "index" and answer.isdigit() and int(answer) < 26:
        return by_letter.get(chr(ord("A") + int(answer)))
    if answer_format == "letter":
        return by_letter.get(answer.strip("()."))
    return None


def _benchmark_answers(
    ctx: ReadContext, parquet_options: ParquetOptions, record: dict, options: list[tuple[str, str]]
) -> list[str]:
    spec = ctx.spec
    column = spec.fields.get("answer")
    if column is None:
        return []
    value = record[column]
    key = parquet_options.answer_key
    answer_format = parquet_options.answer_format
    answers: list[str] = []
    for item in value if isinstance(value, list) else [value]:
        if key is not None and isinstance(item, dict):
            item = item.get(key)
        text = _text_of(item, f"field {column!r}")
        if text and answer_format != "text" and options:
            resolved = _resolve(text, options, answer_format)
            if resolved is None:  # kept as given (a placeholder such as "?"), and counted
                ctx.stats["answers_not_an_option"] = ctx.stats.get("answers_not_an_option", 0) + 1
            text = resolved or text
        if text and text not in answers:
            answers.append(text)
    return answers


def _element_box(
    ctx: ReadContext, options: ParquetOptions, record: dict, images: list[tuple[bytes, str | None]]
) -> str:
    """A GUI grounding item's answer: its element's box normalised to its one screenshot."""
    from PIL import Image

    fields = ctx.spec.fields
    if len(images) != 1:
        raise ValueError(f"a GUI grounding item needs one screenshot, got {len(images)}")
    with Image.open(io.BytesIO(images[0][0])) as screenshot:
        width, height = screenshot.size
    return screenspot_reference(
        record[fields["bbox"]],
        width,
        height,
        _text_of(record[fields["platform"]], f"field {fields['platform']!r}"),
        _text_of(record[fields["element_type"]], f"field {fields['element_type']!r}"),
        options.bbox_format,
        options.bbox_units,
    )


def _benchmark_record(ctx: ReadContext, parquet_options: ParquetOptions, record: dict):
    spec = ctx.spec
    options = _benchmark_options(spec, parquet_options, record)
    columns = [spec.fields[f] for f in ("context", "question") if f in spec.fields]
    parts = [_text_of(record[column], f"field {column!r}") for column in columns]
    parts.append("\n".join(f"{letter}. {text}" for letter, text in options))
    question = "\n".join(part for part in parts if part)
    images = _benchmark_images(ctx, parquet_options, record)
    if "bbox" in spec.fields:
        answers = [_element_box(ctx, parquet_options, record, images)]
    else:
        answers = _benchmark_answers(ctx, parquet_options, record, options) or [""]
    return images, [(question, answer) for answer in answers]


def read_hf_parquet(ctx: ReadContext, shard: Shard) -> Iterator[Record]:
    options = ParquetOptions.model_validate(ctx.spec.options)
    group = shard.part or 0
    try:
        handle = ctx.files.open_input(shard.path)
    except OSError as exc:
        yield Rejected(
            Reason.UNREADABLE_FILE, f"cannot open parquet: {exc}", SourceRef(shard.path, f"row_group={group}")
        )
        return
    with handle:
        try:
            yield from _read_row_group(ctx, options, handle, shard.path, group)
        except (OSError, ValueError, IndexError) as exc:  # a corrupt page: the rest of the row group is lost
            yield Rejected(
                Reason.UNREADABLE_FILE,
                f"cannot read parquet row group {group}: {exc}",
                SourceRef(shard.path, f"row_group={group}"),
            )


def _read_row_group(ctx: ReadContext, options: ParquetOptions, handle, path: str, group: int) -> Iterator[Record]:
    parquet = pq.ParquetFile(handle)
    row = sum(parquet.metadata.row_group(g).num_rows for g in range(group))
    for batch in parquet.iter_batches(batch_size=ctx.ingest.parquet_batch_rows, row_groups=[group]):
        for record in batch.to_pylist():
            ref = SourceRef(path, None, row)
            row += 1

            def convert(record=record, ref=ref):
                if options.layout == "columns":
                    images, turns = _columns_record(ctx, record, f"{posixpath.basename(ref.file)}:{ref.row}")
                elif options.layout == "benchmark":
                    images, turns = _benchmark_record(ctx, options, record)
                else:
                    images, turns = _finevision_record(ctx, record)
                if not turns:
                    yield Rejected(Reason.NO_TURNS, "texts is empty", ref, ctx.preview(_without_bytes(record)))
                    return
                yield RawSample(images, turns, ref, item_id_of(ctx.spec, record))

            yield from iter_with_rejects(ctx, ref, _without_bytes(record), convert)


def _without_bytes(value):
    """A record fit for quarantine's `raw`: binary payloads replaced by their length."""
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    if isinstance(value, dict):
        return {k: _without_bytes(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_bytes(v) for v in value]
    return value
