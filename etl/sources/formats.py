"""The source formats: one entry per format, the one place a format is declared.

An entry gives the format's reader, the file extensions its `location` lists, how its files
become shards, and the pydantic model of its `options:`. Everything else is derived from it:
`SourceSpec` (etl/config.py) accepts the formats named here and checks a spec's options against
the entry's model when the spec loads; `plan_shards` and `split_shard` (etl.sources) list and
split files as the entry says. docs/sources.md, "How to add a source format", lists the files a
new format touches.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import ValidationError

from etl.sources.base import FormatOptions, Reader
from etl.sources.chat import read_llava, read_sharegpt
from etl.sources.gui_trajectory import GuiOptions, read_gui_trajectory
from etl.sources.hf_parquet import ParquetOptions, read_hf_parquet
from etl.sources.vqa import read_vqa
from etl.sources.webdataset import read_webdataset


class Split(StrEnum):
    """How a format's files become shards (units of work)."""

    FILES = "files"  # one shard per file
    ROW_GROUPS = "row_groups"  # one shard per parquet row group, planned from the footers on the driver
    # one shard per file, and a JSON or JSONL file over `ingest.shard_bytes` as byte ranges of whole
    # records (etl/sources/splits.py); not for a spec with `group_by`, whose samples gather rows of a file
    BYTE_RANGES = "byte_ranges"


@dataclass(frozen=True)
class SourceFormat:
    read: Reader
    extensions: tuple[str, ...]
    split: Split = Split.FILES
    options: type[FormatOptions] = FormatOptions  # the base class: no options


FORMATS: dict[str, SourceFormat] = {
    "hf_parquet": SourceFormat(read_hf_parquet, (".parquet",), Split.ROW_GROUPS, ParquetOptions),
    "llava_json": SourceFormat(read_llava, (".json", ".jsonl"), Split.BYTE_RANGES),
    "sharegpt_jsonl": SourceFormat(read_sharegpt, (".jsonl", ".json"), Split.BYTE_RANGES),
    "vqa_jsonl": SourceFormat(read_vqa, (".jsonl",), Split.BYTE_RANGES),
    "vqa_csv": SourceFormat(read_vqa, (".csv",)),  # a CSV row may hold quoted newlines
    "webdataset": SourceFormat(read_webdataset, (".tar",)),
    "gui_trajectory": SourceFormat(read_gui_trajectory, (".jsonl",), Split.BYTE_RANGES, GuiOptions),
}


def options_problem(format_name: str, options: dict[str, Any]) -> str | None:
    """Why `options` are not valid options of the format, in one line naming the option and the
    format; None when they are. An unknown option is named first: a misspelt required option is
    also a missing one, and the misspelling is what to fix."""
    model = FORMATS[format_name].options
    try:
        model.model_validate(options)
    except ValidationError as exc:
        first = sorted(exc.errors(), key=lambda error: error["type"] != "extra_forbidden")[0]
        key = ".".join(str(part) for part in first["loc"])
        more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        if first["type"] == "extra_forbidden":
            known = ", ".join(model.model_fields) or "none"
            return f"{key!r} is not an option of format {format_name} (its options: {known}){more}"
        if first["type"] == "missing":
            return f"{key} is required by format {format_name}{more}"
        message = str(first["ctx"]["error"]) if first["type"] == "value_error" else first["msg"]
        return f"{key + ': ' if key else ''}{message} (format {format_name}){more}"
    return None
