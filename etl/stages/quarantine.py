"""Quarantine rows: every record a stage rejects, with its reason, kept and queryable."""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from etl.schema import QUARANTINE, SOURCE_REF
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


def image_rejections(images: DataFrame, reason: Reason, detail: Column) -> DataFrame:
    """Rejected images (an `image_id` column) as rows for `quarantine_rows`. An image belongs to no
    one sample: subset and sample_id stay null and source_ref holds the image id as its member (under
    file "image_embeddings", as the embed stage has always written it, so quarantine ids stay stable)."""
    return images.select(
        F.lit(str(reason)).alias("reject_reason"),
        detail.alias("reject_detail"),
        F.lit(None).cast("string").alias("subset"),
        F.lit(None).cast("string").alias("sample_id"),
        F.struct(
            F.lit("image_embeddings").alias("file"),
            F.col("image_id").alias("member"),
            F.lit(None).cast("long").alias("row"),
        ).alias("source_ref"),
        F.col("image_id").alias("raw"),
    )
