"""The release folder in the layout of the Hub's FineVision (`HuggingFaceM4/FineVision`):

    <release>/README.md                                     dataset card (YAML: configs, features, sizes)
    <release>/default/train-00000-of-00004.parquet          every subset, globally shuffled (nanoVLM streams it)
    <release>/<folder>/train-00000-of-00002.parquet         one config per subset, split `train`
    <release>/_provenance/<folder>/train-00000-of-00002.parquet   the project's columns of the same rows

A shard holds exactly FineVision's columns and features (`RELEASE_FEATURES`: ratings int64), so it
concatenates with the Hub's subsets; `sample_id`, `subset`, `category`, `contaminated`,
`dup_cluster_id` and `turn_sources` go to the side file of the same name under `_provenance/`, one row per shard row
(`row` = its index in the shard). A config is named as its subset (FineVision's names, such as
`geo170k(qa)`, included); its folder is the name made path-safe (`folder_names`).

Shards are written by Spark tasks (`mapInArrow`), never gathered on the driver: the rows are range-
partitioned on (config, key) into about `shard_bytes` per task, each task writes its rows with
pyarrow into a staging folder in row groups of 100 rows (what `datasets` writes for image data),
starting a new file past `shard_bytes`, and returns what it wrote; the driver then only renames
files into the `train-i-of-n` names.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs as pafs
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import to_arrow_schema

from etl.schema import GOLD_SAMPLES

# FineVision's rating axes in the order of the card's columns.
RELEASE_AXES = ("relevance", "visual_dependency", "image_correspondence", "formatting")
PROVENANCE_COLUMNS = ("sample_id", "subset", "category", "contaminated", "dup_cluster_id", "turn_sources")
DEFAULT_CONFIG = "default"
ROW_GROUP_ROWS = (
    100  # datasets' parquet row group size for image data (config.PARQUET_ROW_GROUP_SIZE_FOR_IMAGE_DATASETS)
)


def _value(dtype: str) -> dict:
    return {"dtype": dtype, "_type": "Value"}


# The features of a release shard, as `datasets` >= 4 writes them (`List`) in the parquet metadata.
RELEASE_FEATURES: dict[str, dict] = {
    "images": {"feature": {"_type": "Image"}, "_type": "List"},
    "texts": {"feature": {"user": _value("string"), "assistant": _value("string")}, "_type": "List"},
    "source": _value("string"),
}
for _axis in RELEASE_AXES:
    RELEASE_FEATURES[f"{_axis}_ratings"] = {"feature": _value("int64"), "_type": "List"}
    RELEASE_FEATURES[f"{_axis}_min"] = _value("int64")

_IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
_TURN = pa.struct([("user", pa.string()), ("assistant", pa.string())])
RELEASE_ARROW = pa.schema(
    [("images", pa.list_(_IMAGE)), ("texts", pa.list_(_TURN)), ("source", pa.string())]
    + [
        field
        for axis in RELEASE_AXES
        for field in ((f"{axis}_ratings", pa.list_(pa.int64())), (f"{axis}_min", pa.int64()))
    ]
).with_metadata({"huggingface": json.dumps({"info": {"features": RELEASE_FEATURES}})})
PROVENANCE_ARROW = pa.schema(
    [
        ("row", pa.int64()),
        ("sample_id", pa.string()),
        ("subset", pa.string()),
        ("category", pa.string()),
        ("contaminated", pa.bool_()),
        ("dup_cluster_id", pa.string()),
        ("turn_sources", pa.list_(pa.struct([("sample_id", pa.string()), ("turn_index", pa.int32())]))),
    ]
)


def _pyarrow_defaults(dtype: pa.DataType) -> pa.DataType:
    """The type with pyarrow's defaults: every field nullable and list items named `item`."""
    if pa.types.is_list(dtype):
        return pa.list_(_pyarrow_defaults(dtype.value_type))
    if pa.types.is_struct(dtype):
        return pa.struct([pa.field(field.name, _pyarrow_defaults(field.type)) for field in dtype])
    return dtype


# gold_samples' columns as Arrow (int32 ratings, the project's columns): for tools writing gold-shaped tables.
GOLD_ARROW = pa.schema([pa.field(f.name, _pyarrow_defaults(f.type)) for f in to_arrow_schema(GOLD_SAMPLES)])

_SAFE = re.compile(r"[^A-Za-z0-9._-]")


def folder_names(configs: Iterable[str]) -> dict[str, str]:
    """config name -> folder: characters other than letters, digits, `.`, `_`, `-` become `_`
    (`geo170k(qa)` -> `geo170k_qa_`); a safe name keeps itself, and a changed name that would collide
    with another's folder, or start with `_` or `.` (hidden from `datasets`' file discovery), gets a
    short digest appended."""
    import hashlib

    names = sorted(configs)
    folders: dict[str, str] = {c: c for c in names if not _SAFE.search(c) and c[:1] not in ("_", ".")}
    for config in names:
        if config in folders:
            continue
        folder = _SAFE.sub("_", config)
        if folder in folders.values() or folder[:1] in ("_", ".", ""):
            folder = f"{folder}-{hashlib.sha256(config.encode()).hexdigest()[:8]}".lstrip("_.")
        folders[config] = folder
    return {c: folders[c] for c in names}


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """pyarrow filesystem and path for a local folder or a URI (s3://, gs://, abfs://, ...)."""
    if "://" in uri:
        return pafs.FileSystem.from_uri(uri)
    from pathlib import Path

    return pafs.LocalFileSystem(), str(Path(uri).resolve())


_WRITTEN = "config string, file string, side string, first_key string, rows long, bytes long, arrow_bytes long"
_WRITTEN_ARROW = pa.schema(
    [(n, pa.string()) for n in ("config", "file", "side", "first_key")]
    + [(n, pa.int64()) for n in ("rows", "bytes", "arrow_bytes")]
)


class _ShardWriter:
    """Writes a task's rows, sorted by (config, key), as files of one config, in row groups of
    ROW_GROUP_ROWS rows, starting a new file once a file holds shard_bytes of Arrow data."""

    def __init__(self, staging: str, shard_bytes: int):
        self.fs, self.root = filesystem(staging)
        self.shard_bytes = shard_bytes
        self.task = uuid.uuid4().hex  # unique per attempt: a retried task never overwrites a finished one
        self.written: list[dict] = []
        self.data: pq.ParquetWriter | None = None
        self.side: pq.ParquetWriter | None = None
        self.config: str | None = None
        self.pending: list[pa.Table] = []
        self.pending_rows = self.rows = self.arrow_bytes = 0
        self.current: dict = {}

    def _open(self, config: str, first_key: str) -> None:
        self.close()
        name = f"{self.task}-{len(self.written):05d}.parquet"
        data, side = f"{self.root}/{config}/{name}", f"{self.root}/_provenance/{config}/{name}"
        self.fs.create_dir(f"{self.root}/{config}", recursive=True)
        self.fs.create_dir(f"{self.root}/_provenance/{config}", recursive=True)
        self.data = pq.ParquetWriter(data, RELEASE_ARROW, filesystem=self.fs)
        self.side = pq.ParquetWriter(side, PROVENANCE_ARROW, filesystem=self.fs)
        self.config, self.rows, self.arrow_bytes = config, 0, 0
        self.current = {"config": config, "file": data, "side": side, "first_key": first_key}

    def _flush(self) -> None:
        if not self.pending or self.data is None or self.side is None:
            return
        table = pa.concat_tables(self.pending)
        self.pending, self.pending_rows = [], 0
        release = table.select(RELEASE_ARROW.names).cast(RELEASE_ARROW)
        self.data.write_table(release, row_group_size=ROW_GROUP_ROWS)
        rows = pa.array(range(self.rows, self.rows + table.num_rows), pa.int64())
        side = table.select(PROVENANCE_ARROW.names[1:]).add_column(0, "row", rows).cast(PROVENANCE_ARROW)
        self.side.write_table(side, row_group_size=max(ROW_GROUP_ROWS, side.num_rows))
        self.rows += table.num_rows
        self.arrow_bytes += release.nbytes

    def close(self) -> None:
        self._flush()
        if self.data is not None and self.side is not None:
            self.data.close()
            self.side.close()
            size = self.fs.get_file_info(self.current["file"]).size
            self.written.append(self.current | {"rows": self.rows, "bytes": size, "arrow_bytes": self.arrow_bytes})
            self.data = self.side = None

    def write(self, table: pa.Table) -> None:
        configs = table.column("config").to_pylist()
        keys = table.column("key").to_pylist()
        start = 0
        while start < len(configs):
            config = configs[start]
            if (
                self.data is None
                or config != self.config
                or (not self.pending and self.arrow_bytes >= self.shard_bytes)
            ):
                self._open(config, keys[start])
            end, limit = start, start + ROW_GROUP_ROWS - self.pending_rows
            while end < len(configs) and end < limit and configs[end] == config:
                end += 1
            self.pending.append(table.slice(start, end - start))
            self.pending_rows += end - start
            if self.pending_rows >= ROW_GROUP_ROWS:
                self._flush()
            start = end


def _write_partition(staging: str, shard_bytes: int):
    def write(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        shards = _ShardWriter(staging, shard_bytes)
        for batch in batches:
            shards.write(pa.Table.from_batches([batch]))
        shards.close()
        if shards.written:
            yield pa.RecordBatch.from_pylist(shards.written, schema=_WRITTEN_ARROW)

    return write


@dataclass(frozen=True)
class Shard:
    config: str
    path: str  # relative to the release folder
    provenance: str  # the side file, relative to the release folder
    rows: int
    bytes: int  # parquet file size
    arrow_bytes: int  # uncompressed Arrow size (the Hub's num_bytes)


def _row_bytes():
    """About the Arrow size of a row: image bytes and text characters."""
    images = F.aggregate(
        "images", F.lit(0).cast("long"), lambda acc, i: acc + F.coalesce(F.length(i["bytes"]), F.lit(0))
    )
    texts = F.aggregate(
        "texts",
        F.lit(0).cast("long"),
        lambda acc, t: acc + F.coalesce(F.length(t["user"]), F.lit(0)) + F.coalesce(F.length(t["assistant"]), F.lit(0)),
    )
    return F.coalesce(images, F.lit(0)) + F.coalesce(texts, F.lit(0)) + F.lit(64)


def release_frame(rows: DataFrame, folders: dict[str, str], shuffled_default: bool, seed: int) -> DataFrame:
    """The rows to write, with `config` (the folder) and `key` (the order within a config): each
    subset by sample_id, and, if asked, every row again under `default` in a seeded hash order."""
    columns = [*RELEASE_ARROW.names, *PROVENANCE_COLUMNS]
    mapping = F.create_map(*[F.lit(x) for pair in sorted(folders.items()) for x in pair])
    frame = rows.select(mapping[F.col("subset")].alias("config"), F.col("sample_id").alias("key"), *columns)
    if shuffled_default:
        key = F.sha2(F.concat(F.lit(f"{seed}:"), F.col("sample_id")), 256)
        frame = frame.unionByName(rows.select(F.lit(DEFAULT_CONFIG).alias("config"), key.alias("key"), *columns))
    return frame


def write_shards(frame: DataFrame, release_dir: str, shard_bytes: int) -> list[Shard]:
    """Write `release_frame`'s rows as `<config>/train-i-of-n.parquet` and their side files under
    release_dir, replacing the shard folders of an earlier export."""
    fs, root = filesystem(release_dir)
    staging_name = f"_staging-{uuid.uuid4().hex[:8]}"
    staging = f"{root}/{staging_name}"
    fs.create_dir(staging, recursive=True)
    sized = frame.select(F.sum(_row_bytes()).alias("bytes"), F.count("*").alias("rows")).first()
    total, count = (sized["bytes"] or 0, sized["rows"]) if sized else (0, 0)
    # a task per shard_bytes, but at least a row group's rows each (tiny shard_bytes in tests)
    partitions = max(1, min(math.ceil(total / shard_bytes), math.ceil(count / ROW_GROUP_ROWS)))
    ordered = frame.repartitionByRange(partitions, "config", "key").sortWithinPartitions("config", "key")
    staging_uri = f"{release_dir.split('://', 1)[0]}://{staging}" if "://" in release_dir else staging
    written = ordered.mapInArrow(_write_partition(staging_uri, shard_bytes), _WRITTEN).collect()
    by_config: dict[str, list] = {}
    for row in written:  # file names carry the task id, not its range: order a config's files by first key
        by_config.setdefault(row["config"], []).append(row)
    _remove_old_shards(fs, root, staging_name)
    shards = []
    for config, files in sorted(by_config.items()):
        files.sort(key=lambda r: r["first_key"])
        for folder in (f"{root}/{config}", f"{root}/_provenance/{config}"):
            fs.create_dir(folder, recursive=True)
        for i, row in enumerate(files):
            name = f"train-{i:05d}-of-{len(files):05d}.parquet"
            fs.move(row["file"], f"{root}/{config}/{name}")
            fs.move(row["side"], f"{root}/_provenance/{config}/{name}")
            shards.append(
                Shard(
                    config,
                    f"{config}/{name}",
                    f"_provenance/{config}/{name}",
                    row["rows"],
                    row["bytes"],
                    row["arrow_bytes"],
                )
            )
    fs.delete_dir(staging)
    return shards


_SHARD_NAME = re.compile(r"^train-\d{5}-of-\d{5}\.parquet$")


def _remove_old_shards(fs: pafs.FileSystem, root: str, keep: str) -> None:
    """Delete the folders an earlier export wrote (`_provenance`, and every folder holding only
    `train-i-of-n.parquet` files); anything else in the release folder stays."""
    for entry in fs.get_file_info(pafs.FileSelector(root)):
        if entry.type != pafs.FileType.Directory or entry.base_name == keep:
            continue
        inside = fs.get_file_info(pafs.FileSelector(entry.path, recursive=True))
        files = [i for i in inside if i.type == pafs.FileType.File]
        if entry.base_name == "_provenance" or (files and all(_SHARD_NAME.match(i.base_name) for i in files)):
            fs.delete_dir(entry.path)


def write_card(release_dir: str, text: str) -> str:
    fs, root = filesystem(release_dir)
    with fs.open_output_stream(f"{root}/README.md") as out:
        out.write(text.encode())
    return f"{release_dir.rstrip('/')}/README.md"
