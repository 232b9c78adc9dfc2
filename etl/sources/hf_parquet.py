"""Hugging Face datasets parquet exports, one shard per row group.

`options.layout: finevision` (default; The Cauldron uses it too): `images` list<struct<bytes,
path>> and `texts` list<struct<user, assistant>>. `options.layout: columns`: one image column
(`fields.image`: struct<bytes, path> or binary) and `fields.question`/`fields.answer`, or
`fields.caption` with `question_templates`.
"""

from __future__ import annotations

import posixpath
from typing import Iterator

import pyarrow.parquet as pq

from etl.sources.base import (
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


def row_group_count(files, path: str) -> int:
    with files.open_input(path) as handle:
        return pq.ParquetFile(handle).num_row_groups


def _image(ctx: ReadContext, value) -> tuple[bytes, str | None]:
    if isinstance(value, (bytes, bytearray)):
        data, path = bytes(value), None
    elif isinstance(value, dict):
        data, path = value.get("bytes"), value.get("path")
        if data is None:
            if not path:
                raise KeyError("bytes (image has neither bytes nor path)")
            return ctx.read_image(path), path
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


def read_hf_parquet(ctx: ReadContext, shard: Shard) -> Iterator[Record]:
    layout = ctx.spec.options.get("layout", "finevision")
    group = shard.part or 0
    try:
        handle = ctx.files.open_input(shard.path)
    except OSError as exc:
        yield Rejected(Reason.UNREADABLE_FILE, f"cannot open parquet: {exc}", SourceRef(shard.path, f"row_group={group}"))
        return
    with handle:
        try:
            yield from _read_row_group(ctx, handle, shard.path, group, layout)
        except (OSError, ValueError, IndexError) as exc:  # a corrupt page: the rest of the row group is lost
            yield Rejected(Reason.UNREADABLE_FILE, f"cannot read parquet row group {group}: {exc}", SourceRef(shard.path, f"row_group={group}"))


def _read_row_group(ctx: ReadContext, handle, path: str, group: int, layout: str) -> Iterator[Record]:
    parquet = pq.ParquetFile(handle)
    row = sum(parquet.metadata.row_group(g).num_rows for g in range(group))
    for batch in parquet.iter_batches(batch_size=ctx.ingest.parquet_batch_rows, row_groups=[group]):
        for record in batch.to_pylist():
            ref = SourceRef(path, None, row)
            row += 1

            def convert(record=record, ref=ref):
                if layout == "columns":
                    images, turns = _columns_record(ctx, record, f"{posixpath.basename(ref.file)}:{ref.row}")
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
