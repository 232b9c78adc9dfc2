"""Source readers, one per format (`etl.sources.formats`), and the shards they read."""

from __future__ import annotations

from typing import TYPE_CHECKING

from etl.sources.base import Shard
from etl.sources.files import ArrowFiles, list_files
from etl.sources.formats import FORMATS, Split
from etl.sources.hf_parquet import row_group_count
from etl.sources.splits import split_points

if TYPE_CHECKING:
    from etl.config import SourceSpec


def plan_shards(spec: SourceSpec, location: str) -> list[Shard]:
    """The units of work for one source: a shard per file, or per row group where the format
    splits by row groups (parquet). Runs on the driver and reads only listings and parquet footers."""
    source_format = FORMATS[spec.format]
    paths = list_files(location, source_format.extensions)
    if source_format.split is not Split.ROW_GROUPS:
        return [Shard(p) for p in paths]
    files = ArrowFiles()
    return [Shard(p, g) for p in paths for g in range(max(row_group_count(files, p), 1))]


def splittable(spec: SourceSpec) -> bool:
    """Whether the source's files may be read as byte ranges: the format splits by byte ranges
    (one record per JSONL line or JSON array element) and nothing joins records (`group_by`
    assembles samples from rows of a file)."""
    return FORMATS[spec.format].split is Split.BYTE_RANGES and spec.group_by is None


def split_shard(spec: SourceSpec, shard: Shard, files, shard_bytes: int) -> list[Shard]:
    """A whole-file shard of a splittable source as byte ranges of about `shard_bytes`, each holding
    whole records; runs on an executor and reads the file once when it is larger than that."""
    if not splittable(spec) or shard.part is not None:
        return [shard]
    with files.open_input(shard.path) as handle:
        size = handle.size()
        if size <= shard_bytes:
            return [shard]
        kind = "json_array" if shard.path.lower().endswith(".json") else "jsonl"
        points = split_points(kind, handle, size, shard_bytes)
    return [Shard(shard.path, None, start, end, first_row) for start, end, first_row in points]
