"""Confs a job sets for itself are put back afterwards: `etl.confs.session_conf`, and the clean job
(which needs 64-row Arrow batches for its image UDF and must not leave them to later stages)."""

from __future__ import annotations

import pytest
from pyspark.sql import Row

from etl import tables
from etl.confs import session_conf
from etl.jobs import clean as clean_job
from etl.runs import PipelineRun
from etl.schema import SAMPLES
from tests.conftest import png_bytes

ARROW_ROWS = clean_job.ARROW_BATCH_ROWS
UNSET_KEY = "spark.finevision.test.unset"


def test_session_conf_restores_set_and_unset_keys_also_on_error(spark):
    spark.conf.set(ARROW_ROWS, "1234")
    spark.conf.unset(UNSET_KEY)
    with pytest.raises(ZeroDivisionError):
        with session_conf(spark, {ARROW_ROWS: "7", UNSET_KEY: "x"}):
            assert (spark.conf.get(ARROW_ROWS), spark.conf.get(UNSET_KEY)) == ("7", "x")
            raise ZeroDivisionError("the job failed")
    assert spark.conf.get(ARROW_ROWS) == "1234" and spark.conf.get(UNSET_KEY, None) is None
    spark.conf.unset(ARROW_ROWS)


def _bronze(spark, config) -> None:
    frame = spark.createDataFrame(
        [
            Row(
                sample_id="s1",
                subset="photos",
                category="General VQA",
                source="photos",
                images=[{"bytes": png_bytes(), "path": None, "image_id": "img-1", "width": 32, "height": 24}],
                texts=[{"user": "What colour?", "assistant": "Red."}],
                source_ref=None,
            )
        ],
        SAMPLES,
    )
    ref = tables.TableRef.of(config, "bronze_samples")
    tables.merge_insert(spark, ref, frame, ["sample_id"], tables.Commit("test", "ingest", "-", "-"), SAMPLES)


@pytest.mark.parametrize("fails", [False, True])
def test_clean_job_sets_arrow_batch_rows_for_itself_only(spark, make_config, monkeypatch, fails):
    config = make_config(mlflow__enabled="false")
    _bronze(spark, config)
    seen = []
    real_clean_samples = clean_job.clean_samples

    def clean_samples(todo, rules):
        seen.append(spark.conf.get(ARROW_ROWS))
        if fails:
            raise RuntimeError("clean failed")
        return real_clean_samples(todo, rules)

    monkeypatch.setattr(clean_job, "clean_samples", clean_samples)
    spark.conf.set(ARROW_ROWS, "1234")  # what the session had before the job
    try:
        run = PipelineRun(spark, config, "clean")
        if fails:
            with pytest.raises(RuntimeError, match="clean failed"):
                clean_job.run(run)
        else:
            clean_job.run(run)
            assert tables.read(spark, run.table("silver_samples")).count() == 1
        assert seen == [str(config.clean.arrow_batch_rows)]
        assert spark.conf.get(ARROW_ROWS) == "1234"
    finally:
        spark.conf.unset(ARROW_ROWS)
