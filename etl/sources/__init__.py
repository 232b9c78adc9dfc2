"""Source adapters, one per format, chosen by a source spec's `format`."""

from __future__ import annotations

from etl.config import SourceSpec
from etl.sources.base import Shard
from etl.sources.chat import read_llava, read_sharegpt
from etl.sources.files import ArrowFiles, list_files
from etl.sources.hf_parquet import read_hf_parquet, row_group_count
from etl.sources.splits import split_points
from etl.sources.vqa import read_vqa
from etl.sources.webdataset import read_webdataset


def _gui_adapter(ctx, shard):
    from etl.sources.gui_trajectory import read_gui_trajectory

    return read_gui_trajectory(ctx, shard)


ADAPTERS = {
    "hf_parquet": read_hf_parquet,
    "llava_json": read_llava,
    "sharegpt_jsonl": read_sharegpt,
    "vqa_jsonl": read_vqa,
    "vqa_csv": read_vqa,
    "webdataset": read_webdataset,
    "gui_trajectory": _gui_adapter,
}

EXTENSIONS = {
    "hf_parquet": (".parquet",),
    "llava_json": (".json", ".jsonl"),
    "sharegpt_jsonl": (".jsonl", ".json"),
    "vqa_jsonl": (".jsonl",),
    "vqa_csv": (".csv",),
    "webdataset": (".tar",),
    "gui_trajectory": (".jsonl",),
}


def plan_shards(spec: SourceSpec, location: str) -> list[Shard]:
    """The units of work for one source: a shard per file, or per row group for parquet.

    Runs on the driver and reads only listings and parquet footers.
    """
    paths = list_files(location, EXTENSIONS[spec.format])
    if spec.format != "hf_parquet":
        return [Shard(p) for p in paths]
    files = ArrowFiles()
    return [Shard(p, g) for p in paths for g in range(max(row_group_count(files, p), 1))]


def splittable(spec: SourceSpec) -> bool:
    """Whether the source's files may be read as byte ranges: one record per JSONL line or JSON
    array element, with nothing joining records (`group_by` assembles samples from rows of a file)."""
    return spec.format in ("llava_json", "sharegpt_jsonl", "gui_trajectory") or (
        spec.format == "vqa_jsonl" and spec.group_by is None
    )


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
