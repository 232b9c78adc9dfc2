"""The release folder: parquet shards per subset in FineVision's Hub layout, and a dataset card.

    <release>/README.md                                  dataset card (YAML: configs, features, sizes)
    <release>/<subset>/train-00000-of-00002.parquet      one config per subset, split `train`

Shards are written by Spark tasks (`mapInArrow`), never gathered on the driver: gold is range-
partitioned on (subset, sample_id), each task writes its rows with pyarrow into a staging folder
and returns what it wrote; the driver then only renames files into the `train-i-of-n` names.
Every shard carries the Hugging Face `features` in its schema metadata, so
`datasets.load_dataset("parquet", ...)` decodes `images` as images.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs as pafs
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import to_arrow_schema
from pyspark.sql.types import ArrayType, DataType, StructType

from etl.schema import GOLD_RATING_AXES, GOLD_SAMPLES, RELEASE_IMAGE


def _pyarrow_defaults(dtype: pa.DataType) -> pa.DataType:
    """The type with pyarrow's defaults, as the shards have always been written: every field nullable
    and list items named `item` (Spark's conversion names them `element` and keeps NOT NULL)."""
    if pa.types.is_list(dtype):
        return pa.list_(_pyarrow_defaults(dtype.value_type))
    if pa.types.is_struct(dtype):
        return pa.struct([pa.field(field.name, _pyarrow_defaults(field.type)) for field in dtype])
    return dtype


# Arrow types of the release columns, from gold's schema.
RELEASE_ARROW = pa.schema([pa.field(f.name, _pyarrow_defaults(f.type)) for f in to_arrow_schema(GOLD_SAMPLES)])

_HF_VALUE = {"string": "string", "int": "int32", "boolean": "bool"}


def hf_feature(dtype: DataType) -> dict:
    """The Hugging Face `datasets` feature of a gold column's Spark type (`images` decode as images)."""
    if dtype == RELEASE_IMAGE:
        return {"_type": "Image"}
    if isinstance(dtype, ArrayType):
        return {"feature": hf_feature(dtype.elementType), "_type": "List"}
    if isinstance(dtype, StructType):
        return {field.name: hf_feature(field.dataType) for field in dtype.fields}
    if dtype.simpleString() not in _HF_VALUE:
        raise ValueError(f"no Hugging Face feature for the gold type {dtype.simpleString()}; known: {list(_HF_VALUE)}")
    return {"dtype": _HF_VALUE[dtype.simpleString()], "_type": "Value"}


HF_FEATURES = {field.name: hf_feature(field.dataType) for field in GOLD_SAMPLES.fields}
SHARD_SCHEMA = RELEASE_ARROW.with_metadata({"huggingface": json.dumps({"info": {"features": HF_FEATURES}})})
_WRITTEN = "subset string, file string, rows long, bytes long"
_WRITTEN_ARROW = pa.schema(
    [("subset", pa.string()), ("file", pa.string()), ("rows", pa.int64()), ("bytes", pa.int64())]
)


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """pyarrow filesystem and path for a local folder or a URI (s3://, gs://, abfs://, ...)."""
    if "://" in uri:
        return pafs.FileSystem.from_uri(uri)
    from pathlib import Path

    return pafs.LocalFileSystem(), str(Path(uri).resolve())


class _ShardWriter:
    """Writes a task's rows, sorted by subset, as files of one subset and at most shard_rows rows."""

    def __init__(self, staging: str, shard_rows: int):
        self.fs, self.root = filesystem(staging)
        self.shard_rows = shard_rows
        self.task = uuid.uuid4().hex  # unique per attempt: a retried task never overwrites a finished one
        self.written: list[dict] = []
        self.writer: pq.ParquetWriter | None = None
        self.subset: str | None = None
        self.path: str | None = None
        self.rows = 0

    def _open(self, subset: str) -> pq.ParquetWriter:
        self.close()
        self.subset, self.rows = subset, 0
        self.fs.create_dir(f"{self.root}/{subset}", recursive=True)
        self.path = f"{self.root}/{subset}/{self.task}-{len(self.written):05d}.parquet"
        return pq.ParquetWriter(self.path, SHARD_SCHEMA, filesystem=self.fs)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            size = self.fs.get_file_info(self.path).size
            self.written.append({"subset": self.subset, "file": self.path, "rows": self.rows, "bytes": size})
            self.writer = None

    def write(self, table: pa.Table) -> None:
        subsets = table.column("subset").to_pylist()
        start = 0
        while start < len(subsets):
            subset = subsets[start]
            if self.writer is None or subset != self.subset or self.rows >= self.shard_rows:
                self.writer = self._open(subset)
            end, limit = start, start + self.shard_rows - self.rows
            while end < len(subsets) and end < limit and subsets[end] == subset:
                end += 1
            self.writer.write_table(table.slice(start, end - start).replace_schema_metadata(SHARD_SCHEMA.metadata))
            self.rows += end - start
            start = end


def _write_partition(staging: str, shard_rows: int):
    def write(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        shards = _ShardWriter(staging, shard_rows)
        for batch in batches:
            shards.write(pa.Table.from_batches([batch]).select(RELEASE_ARROW.names).cast(RELEASE_ARROW))
        shards.close()
        if shards.written:
            yield pa.RecordBatch.from_pylist(shards.written, schema=_WRITTEN_ARROW)

    return write


@dataclass(frozen=True)
class Shard:
    subset: str
    path: str  # relative to the release folder
    rows: int
    bytes: int


def write_shards(gold: DataFrame, release_dir: str, shard_rows: int, total_rows: int) -> list[Shard]:
    """Write gold as `<subset>/train-i-of-n.parquet` under release_dir (replacing old shards)."""
    fs, root = filesystem(release_dir)
    staging = f"{root}/_staging-{uuid.uuid4().hex[:8]}"
    fs.create_dir(staging, recursive=True)
    partitions = max(1, math.ceil(total_rows / shard_rows))
    ordered = gold.repartitionByRange(partitions, "subset", "sample_id").sortWithinPartitions("subset", "sample_id")
    staging_uri = f"{release_dir.split('://', 1)[0]}://{staging}" if "://" in release_dir else staging
    written = ordered.mapInArrow(_write_partition(staging_uri, shard_rows), _WRITTEN).collect()
    # File names carry the task id, not its range: order each subset's files by their first key.
    by_subset: dict[str, list] = {}
    for row in written:
        by_subset.setdefault(row["subset"], []).append(row)
    shards = []
    for subset, files in sorted(by_subset.items()):
        files.sort(key=lambda r: _first_id(fs, r["file"]))
        target = f"{root}/{subset}"
        if fs.get_file_info(target).type != pafs.FileType.NotFound:
            fs.delete_dir(target)
        fs.create_dir(target, recursive=True)
        for i, row in enumerate(files):
            name = f"train-{i:05d}-of-{len(files):05d}.parquet"
            fs.move(row["file"], f"{target}/{name}")
            shards.append(Shard(subset, f"{subset}/{name}", row["rows"], row["bytes"]))
    fs.delete_dir(staging)
    return shards


def _first_id(fs: pafs.FileSystem, path: str) -> str:
    with fs.open_input_file(path) as handle:
        first = pq.ParquetFile(handle).read_row_group(0, columns=["sample_id"]).column(0)
        return first[0].as_py() if len(first) else ""


def subset_statistics(gold: DataFrame) -> list[dict]:
    """Per subset: samples, images, turns, contaminated samples and rate, samples with a duplicate,
    and the mean of each `<axis>_min` where rated."""
    aggregates = [
        F.count("*").alias("samples"),
        F.sum(F.size("images")).alias("images"),
        F.sum(F.size("texts")).alias("turns"),
        F.sum(F.col("contaminated").cast("long")).alias("contaminated_samples"),
        F.sum(F.col("dup_cluster_id").isNotNull().cast("long")).alias("duplicated_samples"),
        F.first("category").alias("category"),
        *[F.avg(f"{a}_min").alias(f"mean_{a}_min") for a in GOLD_RATING_AXES],
    ]
    rows = [r.asDict() for r in gold.groupBy("subset").agg(*aggregates).orderBy("subset").collect()]
    for row in rows:
        row["contamination_rate"] = row["contaminated_samples"] / row["samples"] if row["samples"] else 0.0
    return rows


def _features_yaml() -> list[dict]:
    """HF_FEATURES in the dataset card's `dataset_info.features` form."""

    def entry(name: str, feature: dict) -> dict:
        if feature["_type"] == "Value":
            return {"name": name, "dtype": feature["dtype"]}
        if feature["_type"] == "Image":
            return {"name": name, "dtype": "image"}
        inner = feature["feature"]
        if inner.get("_type") in ("Value", "Image"):
            return {"name": name, "list": entry("", inner)["dtype"]}
        return {"name": name, "list": [entry(k, v) for k, v in inner.items()]}

    return [entry(name, feature) for name, feature in HF_FEATURES.items()]


def dataset_card(
    name: str, shards: list[Shard], stats: list[dict], gold_table: str, gold_version: int, provenance: dict[str, str]
) -> str:
    """README.md of the release: YAML metadata (configs, features, sizes) and per-subset statistics."""
    import yaml

    files: dict[str, list[Shard]] = {}
    for shard in shards:
        files.setdefault(shard.subset, []).append(shard)
    features = _features_yaml()
    configs, infos = [], []
    for subset, parts in sorted(files.items()):
        size = sum(s.bytes for s in parts)
        configs.append({"config_name": subset, "data_files": [{"split": "train", "path": f"{subset}/train-*"}]})
        infos.append(
            {
                "config_name": subset,
                "features": features,
                "splits": [{"name": "train", "num_bytes": size, "num_examples": sum(s.rows for s in parts)}],
                "download_size": size,
                "dataset_size": size,
            }
        )
    total = sum(s["samples"] for s in stats)
    contaminated = sum(s["contaminated_samples"] for s in stats)
    header = {
        "pretty_name": name,
        "task_categories": ["image-text-to-text"],
        "size_categories": [_size_category(total)],
        "configs": configs,
        "dataset_info": infos,
    }
    lines = [
        "---",
        yaml.safe_dump(header, sort_keys=False).rstrip(),
        "---",
        "",
        f"# {name}",
        "",
        "Vision-language training data curated by the FineVision ETL (Spark + Delta Lake), in the layout of",
        "[FineVision](https://huggingface.co/datasets/HuggingFaceM4/FineVision): one config per subset, split `train`.",
        "",
        "```python",
        "from datasets import load_dataset",
        f'ds = load_dataset("parquet", data_files="<this folder>/{configs[0]["config_name"] if configs else "<subset>"}/train-*.parquet", split="train")',
        "```",
        "",
        "## Columns",
        "",
        "FineVision's columns (`images`, `texts`, `source`, `<axis>_ratings` one judge score 1-5 per turn,",
        "`<axis>_min` the lowest over the turns; null where not rated), plus `sample_id` (stable id from",
        "source, record location and content), `subset`, `category`, `contaminated` (an image with SSCD",
        "cosine >= the threshold to a benchmark test image, or a turn containing a benchmark text n-gram)",
        "and `dup_cluster_id` (the near-duplicate or exact-duplicate cluster of the sample's images; null if",
        "none). Contaminated samples are flagged, not removed, unless the curation ran with a removal policy.",
        "",
        "## Subsets",
        "",
        "| subset | category | samples | images | turns | contaminated | rate | with duplicates |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for s in stats:
        lines.append(
            f"| {s['subset']} | {s['category']} | {s['samples']} | {s['images']} | {s['turns']} | "
            f"{s['contaminated_samples']} | {s['contamination_rate']:.2%} | {s['duplicated_samples']} |"
        )
    lines += [
        f"| **all** | | {total} | {sum(s['images'] for s in stats)} | {sum(s['turns'] for s in stats)} | "
        f"{contaminated} | {contaminated / total if total else 0:.2%} | {sum(s['duplicated_samples'] for s in stats)} |",
        "",
    ]
    rated = [s for s in stats if any(s[f"mean_{a}_min"] is not None for a in GOLD_RATING_AXES)]
    if rated:
        lines += [
            "Mean of the per-sample minimum rating:",
            "",
            "| subset | " + " | ".join(GOLD_RATING_AXES) + " |",
            "|---|" + "---:|" * len(GOLD_RATING_AXES),
        ]
        for s in rated:
            cells = [f"{s[f'mean_{a}_min']:.2f}" if s[f"mean_{a}_min"] is not None else "-" for a in GOLD_RATING_AXES]
            lines.append(f"| {s['subset']} | " + " | ".join(cells) + " |")
        lines.append("")
    else:
        lines += ["No `turn_ratings` table existed at export time: the rating columns are null.", ""]
    lines += [
        "## How it was made",
        "",
        f"Exported from the Delta table `{gold_table}` at version {gold_version}. Curation: ingest into one",
        "chat schema, clean (images downscaled to 2,048 px, corrupt images and over-long turns dropped),",
        "SSCD embeddings, decontamination against the benchmark test sets, near-duplicate clustering,",
        "then this export. Provenance:",
        "",
        *[f"- {key}: `{value}`" for key, value in provenance.items()],
        "",
    ]
    return "\n".join(lines)


def _size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return label
    return "1M<n<10M" if n < 10_000_000 else "10M<n<100M"


def write_card(release_dir: str, text: str) -> str:
    fs, root = filesystem(release_dir)
    with fs.open_output_stream(f"{root}/README.md") as out:
        out.write(text.encode())
    return f"{release_dir.rstrip('/')}/README.md"
