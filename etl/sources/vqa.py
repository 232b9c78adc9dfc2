"""Generic VQA / caption rows (JSONL or CSV) with images by relative path.

One row is one question. Fields are named by the spec (`fields.image`, `fields.question`,
`fields.answer`, or `fields.caption` with `question_templates`; optional `fields.id`). With
`group_by`, rows of one file that share that field's value (usually the image) become the turns
of one sample, in file order.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator
from typing import Any

from etl.sources.base import (
    RawSample,
    ReadContext,
    Record,
    Shard,
    SourceRef,
    clean_text,
    convert_each,
    item_id_of,
    iter_with_rejects,
    template_for,
)
from etl.sources.records import iter_csv, iter_jsonl


def _scalar_text(record: dict, field: str) -> str:
    value = record[field]
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise TypeError(f"field {field!r} must be text or a number, got {type(value).__name__}")
    return clean_text(str(value))


def _turn(ctx: ReadContext, record: dict, ref: SourceRef) -> tuple[str, str]:
    spec = ctx.spec
    if "caption" in spec.fields:
        if not spec.question_templates:
            raise KeyError("question_templates (required with fields.caption)")
        key = f"{posixpath.basename(ref.file)}:{ref.row}"  # stable when the data moves
        return template_for(spec.question_templates, key), _scalar_text(record, spec.fields["caption"])
    return _scalar_text(record, spec.field("question")), _scalar_text(record, spec.field("answer"))


def read_vqa(ctx: ReadContext, shard: Shard) -> Iterator[Record]:
    rows = iter_csv(ctx, shard) if ctx.spec.format == "vqa_csv" else iter_jsonl(ctx, shard)
    groups: dict[Any, dict] = {}  # group_by value -> the sample being assembled, in file order
    yield from convert_each(ctx, rows, lambda ref, record: _row(ctx, ref, record, groups))
    for group in groups.values():
        ref = group["ref"]

        def convert_group(group=group, ref=ref):
            image = ctx.read_image(group["image"])
            yield RawSample([(image, group["image"])], group["turns"], ref, group["item_id"])

        yield from iter_with_rejects(ctx, ref, {"image": group["image"], "turns": group["turns"]}, convert_group)


def _row(ctx: ReadContext, ref: SourceRef, record, groups: dict) -> Iterator[Record]:
    """One row: a sample, or (with group_by) a turn added to its group's sample."""
    spec = ctx.spec
    if not isinstance(record, dict):
        raise TypeError(f"expected an object per row, got {type(record).__name__}")
    turn = _turn(ctx, record, ref)
    image_rel = record[spec.field("image")]
    if spec.group_by is None:
        yield RawSample([(ctx.read_image(image_rel), image_rel)], [turn], ref, item_id_of(spec, record))
        return
    key = record[spec.group_by]
    if not isinstance(key, (str, int, float)):
        raise TypeError(f"group_by field {spec.group_by!r} must be a scalar")
    group = groups.get(key)
    if group is None:
        groups[key] = {"ref": ref, "image": image_rel, "turns": [turn], "item_id": item_id_of(spec, record)}
    elif group["image"] != image_rel:
        raise TypeError(f"rows grouped by {key!r} name different images")
    else:
        group["turns"].append(turn)
