"""Record iterators over text formats (JSONL, JSON arrays, CSV), shared by the adapters.

Each yields `(SourceRef, record)` for a parsed record, or a `Rejected` for a line that does not
parse, and never stops early on one bad line.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any, Iterator

from etl.sources.base import ReadContext, Reason, Rejected, Shard, SourceRef


def iter_jsonl(ctx: ReadContext, shard: Shard) -> Iterator[tuple[SourceRef, Any] | Rejected]:
    limit = ctx.ingest.max_record_bytes
    with ctx.files.open_input(shard.path) as handle:
        reader = io.BufferedReader(handle)
        row = -1
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
                yield Rejected(Reason.INVALID_JSON, f"line {row + 1}: {exc.msg} at column {exc.colno}", ref, ctx.preview(text))


def iter_json_array(ctx: ReadContext, shard: Shard) -> Iterator[tuple[SourceRef, Any] | Rejected]:
    """A `.json` file holding one array of records (LLaVA style)."""
    with ctx.files.open_input(shard.path) as handle:
        data = handle.read(ctx.ingest.max_record_bytes + 1)
    ref = SourceRef(shard.path)
    if len(data) > ctx.ingest.max_record_bytes:
        yield Rejected(Reason.RECORD_TOO_LARGE, "JSON file over max_record_bytes; use JSONL", ref)
        return
    try:
        records = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        yield Rejected(Reason.INVALID_JSON, f"whole file: {exc}", ref, ctx.preview(data[:2000].decode("utf-8", "replace")))
        return
    if not isinstance(records, list):
        yield Rejected(Reason.WRONG_TYPE, f"expected a JSON array, got {type(records).__name__}", ref)
        return
    for row, record in enumerate(records):
        yield SourceRef(shard.path, None, row), record


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
                yield Rejected(Reason.INVALID_ROW, "row has a different number of fields than the header", ref, ctx.preview(record))
                continue
            yield ref, record
