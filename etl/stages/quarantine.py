"""Quarantine rows: every record a stage rejects, with its reason, kept and queryable."""

from __future__ import annotations

from collections.abc import Sequence
from functools import reduce

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from etl.schema import QUARANTINE, SOURCE_REF, image_occurrences
from etl.sources.base import Reason


def quarantine_rows(rejected: DataFrame, stage: str, run_id: str) -> DataFrame:
    """Rows for the quarantine table from any frame with reason/detail/raw/source_ref columns.

    The id is derived from stage, where the record came from and the reason, so a re-run does
    not quarantine the same record twice.
    """
    ref = F.col("source_ref")
    quarantine_id = F.sha2(
        F.concat_ws(
            "\x1f",
            F.lit(stage),
            ref.file,
            F.coalesce(ref.member, F.lit("")),
            F.coalesce(ref.row.cast("string"), F.lit("")),
            F.coalesce(F.col("sample_id"), F.lit("")),
            F.col("reject_reason"),
        ),
        256,
    ).substr(1, 32)
    return rejected.select(
        quarantine_id.alias("quarantine_id"),
        F.lit(stage).alias("stage"),
        F.col("reject_reason").alias("reason"),
        F.col("reject_detail").alias("detail"),
        "subset",
        "sample_id",
        F.col("source_ref").cast(SOURCE_REF),
        "raw",
        F.lit(run_id).alias("run_id"),
    ).select(*QUARANTINE.fieldNames())


def rejected_rows(frame: DataFrame) -> DataFrame:
    """The rows of a stage's output that carry a reject reason."""
    return frame.filter(F.col("reject_reason").isNotNull())


def counts_by_reason(frame: DataFrame, reason: str | Column = "reject_reason") -> dict[str | None, int]:
    """Rows per reject reason, in one pass; None counts the rows that pass."""
    counts = frame.groupBy(F.col(reason) if isinstance(reason, str) else reason).agg(F.count("*").alias("n"))
    return {row[0]: row["n"] for row in counts.collect()}


def image_rejections(images: DataFrame, holders: Sequence[DataFrame], reason: Reason, detail: Column) -> DataFrame:
    """Rejected images (an `image_id` column) as rows for `quarantine_rows`, each filed under the first
    sample (by sample_id) of `holders` (frames with subset, sample_id, source_ref and images) that holds
    it: that sample's subset, sample_id and source_ref lead back to the record in its source."""
    occurrences = [image_occurrences(frame, "sample_id", "subset", "source_ref") for frame in holders]
    rejected_ids = images.select("image_id").distinct()
    first_holder = (
        reduce(DataFrame.unionByName, occurrences)
        .join(rejected_ids, "image_id")
        .groupBy("image_id")
        .agg(F.min(F.struct("sample_id", "subset", "source_ref")).alias("holder"))
    )
    return images.join(first_holder, "image_id", "left").select(
        F.lit(str(reason)).alias("reject_reason"),
        detail.alias("reject_detail"),
        F.col("holder.subset").alias("subset"),
        F.col("holder.sample_id").alias("sample_id"),
        F.col("holder.source_ref").alias("source_ref"),
        F.col("image_id").alias("raw"),
    )
