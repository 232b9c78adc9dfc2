"""Record iterators over text formats (JSONL, JSON arrays, CSV), shared by the adapters.

Each yields `(SourceRef, record)` for a parsed record, or a `Rejected` for a record that does not
parse or is over `ingest.max_record_bytes`, and never stops early on one bad record. JSONL and JSON
arrays are read as streams over the shard's byte range (`etl.sources.splits`): memory holds one
block and at most one record, whatever the size of the file.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Any

from etl.sources.base import ReadContext, Reason, Rejected, Shard, SourceRef
from etl.sources.splits import ArrayScanner, ByteRange, blocks

_WHITESPACE = b" \t\r\n\xef\xbb\xbf"  # and a UTF-8 byte-order mark


def iter_jsonl(ctx: ReadContext, shard: Shard) -> Iterator[tuple[SourceRef, Any] | Rejected]:
    limit = ctx.ingest.max_record_bytes
    with ctx.files.open_input(shard.path) as handle:
        reader = io.BufferedReader(ByteRange(handle, shard.start, shard.end))
        row = shard.first_row - 1
        while line := reader.readline(limit + 1):  # never holds more than one bounded line
            row += 1
            ref = SourceRef(shard.path, None, row)
            if len(line) > limit:
                size = len(line)
                while line and not line.endswith(b"\n"):  # skip the rest of the line
                    line = reader.readline(1 << 20)
                    size += len(line)
                yield Rejected(Reason.RECORD_TOO_LARGE, f"line has {size} bytes, limit {limit}", ref)
                continue
            text = line.decode("utf-8", errors="replace").strip()
            if not text:
                continue
            try:
                yield ref, json.loads(text)
            except json.JSONDecodeError as exc:
                yield Rejected(
                    Reason.INVALID_JSON, f"line {row + 1}: {exc.msg} at column {exc.colno}", ref, ctx.preview(text)
                )


def iter_json_array(ctx: ReadContext, shard: Shard) -> Iterator[tuple[SourceRef, Any] | Rejected]:
    """The elements of a `.json` file holding one array of records (LLaVA style), in the shard's
    byte range. A range that starts at byte 0 holds the opening bracket; any other starts right
    after a comma between two top-level elements (see `etl.sources.splits.split_points`)."""
    with ctx.files.open_input(shard.path) as handle:
        yield from _array_elements(ctx, shard, ByteRange(handle, shard.start, shard.end))


def _array_elements(ctx: ReadContext, shard: Shard, stream) -> Iterator[tuple[SourceRef, Any] | Rejected]:
    limit = ctx.ingest.max_record_bytes
    scanner = ArrayScanner(depth=0 if shard.start == 0 else 1)
    row = shard.first_row
    start = None if shard.start == 0 else shard.start  # offset of the current element's first byte
    pieces: list[bytes] = []  # the current element's bytes, kept while it is within the limit
    position = shard.start
    for offset, block in blocks(stream, shard.start):
        position = offset + len(block)
        opens, commas, closes = scanner.feed(block, offset)
        if start is None:  # the file's first bytes: whitespace, then the array's bracket
            first = block.lstrip(_WHITESPACE)[:1]
            if not first:
                continue
            if first != b"[":
                detail = f"expected a JSON array, the file starts with {first.decode('utf-8', 'replace')!r}"
                preview = ctx.preview(block[:2000].decode("utf-8", "replace"))
                yield Rejected(Reason.WRONG_TYPE, detail, SourceRef(shard.path), preview)
                return
            start = int(opens[0]) + 1
        close = int(closes[0]) if len(closes) else None
        for end in [*(int(c) for c in commas if close is None or c < close), *([close] if close is not None else [])]:
            if end - start <= limit:
                pieces.append(block[max(start - offset, 0) : end - offset])
            # `[]` has no element, and a comma before the bracket is forgiven
            if not (end == close and end - start <= limit and not b"".join(pieces).strip(_WHITESPACE)):
                yield from _element(ctx, shard, row, end - start, pieces)
                row += 1
            pieces, start = [], end + 1
            if end == close:
                return
        if position - start <= limit:
            pieces.append(block[max(start - offset, 0) :])
    if start is None:
        yield Rejected(Reason.INVALID_JSON, "no JSON array in the file", SourceRef(shard.path))
    elif position - start > limit or b"".join(pieces).strip(_WHITESPACE):  # the array is cut short
        yield from _element(ctx, shard, row, position - start, pieces)


def _element(ctx: ReadContext, shard: Shard, row: int, size: int, pieces: list[bytes]):
    ref = SourceRef(shard.path, None, row)
    limit = ctx.ingest.max_record_bytes
    if size > limit:
        yield Rejected(Reason.RECORD_TOO_LARGE, f"array element {row} has {size} bytes, limit {limit}", ref)
        return
    text = b"".join(pieces).decode("utf-8", errors="replace")
    try:
        yield ref, json.loads(text)
    except json.JSONDecodeError as exc:
        detail = f"array element {row}: {exc.msg} at column {exc.colno}"
        yield Rejected(Reason.INVALID_JSON, detail, ref, ctx.preview(text))


def iter_json_records(ctx: ReadContext, shard: Shard):
    if shard.path.lower().endswith(".json"):
        return iter_json_array(ctx, shard)
    return iter_jsonl(ctx, shard)


def iter_csv(ctx: ReadContext, shard: Shard) -> Iterator[tuple[SourceRef, Any] | Rejected]:
    with ctx.files.open_input(shard.path) as handle:
        text = io.TextIOWrapper(io.BufferedReader(handle), encoding="utf-8", errors="replace", newline="")
        reader = csv.DictReader(text)
        for row, record in enumerate(reader):
            ref = SourceRef(shard.path, None, row)
            if None in record or any(v is None for v in record.values()):
                yield Rejected(
                    Reason.INVALID_ROW, "row has a different number of fields than the header", ref, ctx.preview(record)
                )
                continue
            yield ref, record
