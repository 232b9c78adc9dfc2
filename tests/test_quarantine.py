"""etl/stages/quarantine.py and the run's quarantine writer: rejected rows and their counts per reason."""

from __future__ import annotations

from datetime import UTC, datetime

from pyspark.sql import functions as F

from etl.runs import StageReport
from etl.schema import QUARANTINE
from etl.sources.base import Reason
from etl.stages.quarantine import counts_by_reason, image_rejections, quarantine_rows


def test_counts_per_reason_fill_rows_in_out_and_dropped(spark):
    frame = spark.createDataFrame(
        [("a", None), ("b", "corrupt_image"), ("c", "corrupt_image"), ("d", "no_turns_left")],
        "sample_id string, reject_reason string",
    )
    report = StageReport(stage="clean", started_at=datetime.now(UTC))
    report.count_outcomes(counts_by_reason(frame))
    assert (report.rows_in, report.rows_out) == (4, 1)
    assert report.dropped == {"corrupt_image": 2, "no_turns_left": 1}


def test_each_undecodable_image_is_one_quarantine_row_with_the_enum_reason(spark):
    embedded = spark.createDataFrame(
        [("img1", None), ("img2", None), ("img3", [0.5])], "image_id string, embedding array<float>"
    )
    reason = F.when(F.col("embedding").isNull(), F.lit(str(Reason.UNDECODABLE_IMAGE)))
    assert counts_by_reason(embedded, reason) == {"undecodable_image": 2, None: 1}

    holders_schema = (
        "sample_id string, subset string, source_ref struct<file: string, member: string, row: long>, "
        "images array<struct<image_id: string>>"
    )
    silver = spark.createDataFrame(
        [
            ("s2", "ai2d", ("ai2d.json", None, 7), [("img1",)]),
            ("s1", "ai2d", ("ai2d.json", None, 3), [("img3",), ("img1",)]),
        ],
        holders_schema,
    )
    benchmark_items = spark.createDataFrame(
        [("b9", "chartqa", ("chartqa/test.parquet", None, 0), [("img2",)])], holders_schema
    )
    failed = embedded.filter(F.col("embedding").isNull())
    detail = F.concat(F.lit("could not decode "), F.col("image_id"))
    rejections = image_rejections(failed, [silver, benchmark_items], Reason.UNDECODABLE_IMAGE, detail)
    rows = quarantine_rows(rejections, "embed", "run1").collect()
    assert [field.name for field in QUARANTINE] == list(rows[0].asDict())
    assert sorted((r["reason"], r["detail"], r["raw"], r["stage"], r["run_id"]) for r in rows) == [
        ("undecodable_image", "could not decode img1", "img1", "embed", "run1"),
        ("undecodable_image", "could not decode img2", "img2", "embed", "run1"),
    ]
    # each image under the first sample that holds it, with that record's place in its source
    assert sorted((r["raw"], r["subset"], r["sample_id"], tuple(r["source_ref"])) for r in rows) == [
        ("img1", "ai2d", "s1", ("ai2d.json", None, 3)),
        ("img2", "chartqa", "b9", ("chartqa/test.parquet", None, 0)),
    ]
    assert len({r["quarantine_id"] for r in rows}) == 2  # one id per image, so a re-run adds no second row
