"""Ingestion: shards of raw sources -> unified sample rows, benchmark rows and quarantine rows.

Two distributed steps. `split_tasks` turns each big JSON or JSONL file into byte ranges of about
`ingest.shard_bytes` (one pass over the file on an executor, `etl.sources.splits`), so a 1 GB
array spreads over every core. `parse_shards` opens each shard on an executor, runs the format's
reader and emits one row per record, either a sample or a rejection with its reason. Every record
therefore leaves the stage in exactly one place.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterable, Iterator

import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import IntegerType, LongType, MapType, StringType, StructField, StructType

from etl.config import IngestConfig, SourceSpec
from etl.schema import BENCHMARK_ITEMS, SAMPLES
from etl.sources.base import RawSample, ReadContext, Rejected, Shard

TASKS = StructType(
    [
        StructField("spec", StringType(), False),
        StructField("path", StringType(), False),
        StructField("part", IntegerType()),
        StructField("start", LongType(), False),
        StructField("end", LongType()),
        StructField("first_row", LongType(), False),
        StructField("image_root", StringType()),
        StructField("data_root", StringType()),
    ]
)

# Rejections have no sample_id etc., so every column of the parsed frame is nullable.
PARSED = StructType(
    [
        *(StructField(f.name, f.dataType, True) for f in SAMPLES.fields),
        StructField("benchmark", StringType()),
        StructField("item_id", StringType()),
        StructField("reject_reason", StringType()),
        StructField("reject_detail", StringType()),
        StructField("raw", StringType()),
        # the adapter's counters this record added (e.g. GUI steps dropped), `<subset>.<name>`: null when none
        StructField("counters", MapType(StringType(), LongType())),
    ]
)
_EMIT_BYTES = 32 * 1024 * 1024  # flush an Arrow batch once it holds this much image data


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def image_size(data: bytes) -> tuple[int | None, int | None]:
    """Width and height from the image header, without decoding pixels; None if unreadable or over
    Pillow's bomb limit (the clean stage quarantines such a sample)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except Exception:  # noqa: BLE001 - any unreadable header: the clean stage quarantines the sample
        return None, None


def relative_to(path: str, root: str) -> str:
    root = root.rstrip("/") + "/"
    return path[len(root) :] if path.startswith(root) else path


def sample_row(spec: SourceSpec, sample: RawSample, data_root: str) -> dict:
    images = []
    for data, path in sample.images:
        width, height = image_size(data)
        images.append({"bytes": data, "path": path, "image_id": sha256_hex(data), "width": width, "height": height})
    texts = [{"user": u, "assistant": a} for u, a in sample.texts]
    ref = sample.ref
    content = json.dumps([[i["image_id"] for i in images], sample.texts], ensure_ascii=False)
    key = "\x1f".join([spec.source or spec.subset, relative_to(ref.file, data_root), ref.member or "", str(ref.row)])
    return {
        "sample_id": sha256_hex(f"{key}\x1f{sha256_hex(content.encode())}".encode())[:32],
        "subset": spec.subset,
        "category": spec.category,
        "source": spec.source or spec.subset,
        "images": images,
        "texts": texts,
        "source_ref": {"file": ref.file, "member": ref.member, "row": ref.row},
        "benchmark": spec.benchmark,
        "item_id": sample.item_id,
    }


def rejected_row(spec: SourceSpec, rejected: Rejected) -> dict:
    ref = rejected.ref
    return {
        "subset": spec.subset,
        "benchmark": spec.benchmark,
        "source_ref": {"file": ref.file, "member": ref.member, "row": ref.row},
        "reject_reason": str(rejected.reason),
        "reject_detail": rejected.detail,
        "raw": rejected.raw,
    }


def parse_task(task: dict, ingest: IngestConfig) -> Iterator[dict]:
    """All rows of one shard: the adapter's records turned into table rows. Each row carries in
    `counters` what the adapter counted while reading it (e.g. GUI steps dropped under policy
    `keep`); anything counted after the last record goes to the last row."""
    from etl.sources.files import ArrowFiles
    from etl.sources.formats import FORMATS

    spec = SourceSpec.model_validate_json(task["spec"])
    ctx = ReadContext(spec, ArrowFiles(), ingest, image_root=task["image_root"])
    shard = Shard(task["path"], task["part"], task["start"], task["end"], task["first_row"])
    counted: dict[str, int] = {}
    last = None

    def with_counters(row: dict) -> dict:
        """The row with what the adapter counted since the previous call added to its counters."""
        merged = dict(row.get("counters") or {})
        for name, n in ctx.stats.items():
            if n != counted.get(name, 0):
                key = f"{spec.subset}.{name}"
                merged[key] = merged.get(key, 0) + n - counted.get(name, 0)
        counted.update(ctx.stats)
        return {**row, "counters": merged or None}

    for record in FORMATS[spec.format].read(ctx, shard):
        if last is not None:
            yield last
        row = (
            rejected_row(spec, record) if isinstance(record, Rejected) else sample_row(spec, record, task["data_root"])
        )
        last = with_counters(row)
    if last is not None:
        yield with_counters(last)


def split_task(task: dict, ingest: IngestConfig) -> list[dict]:
    """A task as byte-range tasks of about `ingest.shard_bytes` (itself when not splittable or small)."""
    from etl.sources import split_shard
    from etl.sources.files import ArrowFiles

    spec = SourceSpec.model_validate_json(task["spec"])
    shards = split_shard(
        spec,
        Shard(task["path"], task["part"], task["start"], task["end"], task["first_row"]),
        ArrowFiles(),
        ingest.shard_bytes,
    )
    return [{**task, "part": s.part, "start": s.start, "end": s.end, "first_row": s.first_row} for s in shards]


def split_tasks(tasks: DataFrame, ingest: IngestConfig) -> DataFrame:
    """The tasks (schema TASKS) with every big splittable file as byte-range tasks (schema TASKS)."""
    from pyspark.sql.pandas.types import to_arrow_schema

    arrow_schema = to_arrow_schema(TASKS)

    def split(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            rows = [shard for task in batch.to_pylist() for shard in split_task(task, ingest)]
            yield pa.RecordBatch.from_pylist(rows, schema=arrow_schema)

    return tasks.mapInArrow(split, TASKS)


def parse_shards(tasks: DataFrame, ingest: IngestConfig) -> DataFrame:
    """One row per source record (schema PARSED): a sample, or a rejection with its reason, each
    with the adapter's counters for it (`adapter_counters` sums them)."""
    from pyspark.sql.pandas.types import to_arrow_schema

    arrow_schema = to_arrow_schema(PARSED)

    def parse(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        rows: list[dict] = []
        held = 0
        for batch in batches:
            for task in batch.to_pylist():
                for row in parse_task(task, ingest):
                    rows.append(row)
                    held += sum(len(i["bytes"]) for i in row.get("images") or [])
                    if held >= _EMIT_BYTES or len(rows) >= 512:
                        yield pa.RecordBatch.from_pylist(rows, schema=arrow_schema)
                        rows, held = [], 0
        if rows:
            yield pa.RecordBatch.from_pylist(rows, schema=arrow_schema)

    return tasks.mapInArrow(parse, PARSED)


def adapter_counters(parsed: DataFrame) -> DataFrame:
    """(name, n): the adapters' counters summed over the parsed rows (a DataFrame, not an
    accumulator: exact however often the rows are computed, and available over Spark Connect)."""
    counters = parsed.select(F.explode("counters").alias("name", "n"))
    return counters.groupBy("name").agg(F.sum("n").alias("n"))


def accepted_samples(parsed: DataFrame) -> DataFrame:
    return parsed.filter(F.col("reject_reason").isNull() & F.col("benchmark").isNull()).select(*SAMPLES.fieldNames())


def accepted_benchmark_items(parsed: DataFrame) -> DataFrame:
    items = parsed.filter(F.col("reject_reason").isNull() & F.col("benchmark").isNotNull())
    items = items.withColumn("item_id", F.coalesce("item_id", "sample_id"))
    return items.select(*BENCHMARK_ITEMS.fieldNames())
