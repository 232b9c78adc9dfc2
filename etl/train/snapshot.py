"""The driver's half of the training data: the pinned gold version read through Spark (a catalog
name or a path, time travel `versionAsOf`), filtered by the mixture, written once as the training
snapshot that every training process streams (etl/train/data.py, `snapshot_rows`).

    source = GoldSource("main.finevision.gold_samples", 7, where="subset = 'charts'")
    source = write_snapshot(spark, source, world=8, folder="/Volumes/main/finevision/files/training")
    counts = rows_per_rank(spark, source)    # [rows of rank 0, ..., rows of rank 7]

No process reads the table's storage: a Unity Catalog managed table's files are not readable
outside Spark without credential vending, and TorchDistributor's processes on the executors have no
Spark session. The snapshot is parquet under a folder every process reads (a volume, a bucket, a
local folder), one folder `train_rank=<r>` per process, each sorted by the curriculum (or by
`sample_id`): one sort of the selected rows per training run, the way Mosaic Streaming's
`dataframe_to_mds` or Petastorm's converter prepare a DataFrame for TorchDistributor.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

from pyspark.sql import DataFrame, SparkSession

from etl import tables
from etl.tables import TableRef
from etl.train.data import COLUMNS, RANK_COLUMN, GoldSource, rank_of_row


def gold_ref(table: str) -> TableRef:
    """`GoldSource.table` as a table: a path/URI, else a catalog name."""
    name = table.rstrip("/").rsplit("/", 1)[-1].rsplit(".", 1)[-1]
    if "/" in table or "://" in table:
        return TableRef(name=name, path=table)
    return TableRef(name=name, qualified_name=table)


def latest_version(spark: SparkSession, table: str) -> int:
    version = tables.current_version(spark, gold_ref(table))
    if version is None:
        raise ValueError(f"no Delta table {table}: run `finevision export` first, or set data.table")
    return version


def selected(spark: SparkSession, source: GoldSource, world: int = 1, ordered: bool = False) -> DataFrame:
    """The rows the mixture selects at the pinned version, with the columns training reads, how
    many times each is yielded (`_repeats`) and the rank whose share holds it; `ordered`: sorted by
    rank, then the curriculum (`order_by`) or `sample_id`."""
    gold = tables.read(spark, gold_ref(source.table), source.version)
    rows = gold.where(source.where) if source.where else gold
    rows = rows.selectExpr("*", f"{source.repeats or 1} AS _repeats", f"{rank_of_row(world)} AS {RANK_COLUMN}")
    if ordered:  # order_by is a mixture's validated ORDER BY clause
        order = f"{RANK_COLUMN}, {source.order_by or 'sample_id'}"
        rows = spark.sql(f"SELECT * FROM {{rows}} ORDER BY {order}", rows=rows)
    return rows.select(*COLUMNS, *source.rating_columns, "_repeats", RANK_COLUMN)


def count_rows(spark: SparkSession, source: GoldSource) -> int:
    return selected(spark, source).count()


def snapshot_folder(folder: str, source: GoldSource, world: int) -> str:
    """`<folder>/<table>-v<version>-<digest>`: one snapshot per table, version, selection and world."""
    key = "\n".join(map(str, (source.table, source.version, source.where, source.repeats, source.order_by, world)))
    key += "\n" + ",".join(source.rating_columns)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return f"{folder.rstrip('/')}/{gold_ref(source.table).name}-v{source.version}-{digest}"


def write_snapshot(spark: SparkSession, source: GoldSource, world: int, folder: str) -> GoldSource:
    """Write the selected rows under `folder` (replacing an earlier snapshot of the same selection)
    and return the source with its `snapshot` and `world` set. Rows are range-sorted by rank, then
    the curriculum (`order_by`) or `sample_id`, so each rank's files, in name order, hold its rows in
    reading order."""
    target = snapshot_folder(folder, source, world)
    selected(spark, source, world, ordered=True).write.mode("overwrite").partitionBy(RANK_COLUMN).parquet(target)
    # the files as Spark's reader sees the committed write, relative to the folder (their URIs are
    # the driver's: `file:`, `dbfs:`), so that the processes open them under `target`
    marker = f"/{RANK_COLUMN}="
    files = tuple(sorted(f[f.rindex(marker) + 1 :] for f in spark.read.parquet(target).inputFiles()))
    return replace(source, snapshot=target, world=world, files=files)


def rows_per_rank(spark: SparkSession, source: GoldSource) -> list[int]:
    """How many rows each process of the snapshot reads (world numbers back, not rows)."""
    if source.snapshot is None:
        raise ValueError(f"{source} has no snapshot: write_snapshot first")
    counts = {r[0]: r[1] for r in spark.read.parquet(source.snapshot).groupBy(RANK_COLUMN).count().collect()}
    return [int(counts.get(rank, 0)) for rank in range(source.world)]


def require_rows_on_every_rank(spark: SparkSession, source: GoldSource) -> list[int]:
    """The rows per rank; fails naming the mixture when a rank would have none (it would wait forever)."""
    counts = rows_per_rank(spark, source)
    empty = [rank for rank, n in enumerate(counts) if n == 0]
    if empty:
        raise ValueError(
            f"ranks {empty} of {source.world} get no rows of {source}: {sum(counts)} rows are too few "
            f"for {source.world} processes; widen the mixture or use fewer processes"
        )
    return counts
