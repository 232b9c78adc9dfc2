"""Source adapters, one per format, chosen by a source spec's `format`."""

from __future__ import annotations

from etl.config import SourceSpec
from etl.sources.base import Shard
from etl.sources.chat import read_llava, read_sharegpt
from etl.sources.files import ArrowFiles, list_files
from etl.sources.hf_parquet import read_hf_parquet, row_group_count
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
