"""Quarantine rows: every record a stage rejects, with its reason, kept and queryable."""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from etl.schema import QUARANTINE, SOURCE_REF


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
