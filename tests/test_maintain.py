"""`finevision maintain` (etl/maintain.py): OPTIMIZE z-ordered by sample_id where rows are read by
sample, VACUUM with each table's own retention, so a pinned gold version outlives upkeep."""

from __future__ import annotations

import pytest

from etl import tables
from etl.config import PipelineConfig
from etl.maintain import maintain
from etl.schema import REMOVED_SAMPLES


def _rows(spark, run_id: str, n: int = 5):
    rows = [
        {"sample_id": f"s{i}", "subset": "a", "stage": "dedup", "reason": "r", "detail": "", "run_id": run_id}
        for i in range(n)
    ]
    return spark.createDataFrame(rows, REMOVED_SAMPLES)


def _data_files(ref: tables.TableRef) -> set[str]:
    from pathlib import Path

    return {p.name for p in Path(ref.location).glob("*.parquet")}


def test_maintain_compacts_z_orders_and_vacuums_each_table_by_its_own_retention(spark, tmp_path):
    config = PipelineConfig(lakehouse=str(tmp_path))
    commit = tables.Commit(run_id="r", stage="dedup", config_hash="h", git_revision="g")
    # removed_samples (read by sample) may lose unreferenced files at once; gold keeps 30 days.
    removed, gold = tables.TableRef.of(config, "removed_samples"), tables.TableRef.of(config, "gold_samples")
    for ref, days in ((removed, None), (gold, 30)):
        tables.ensure_table(spark, ref, REMOVED_SAMPLES)
        if days is None:  # below Delta's 7-day floor only to see VACUUM delete in a test
            spark.sql(
                f"ALTER TABLE {ref.sql} SET TBLPROPERTIES ('delta.deletedFileRetentionDuration' = 'interval 0 hours')"
            )
        else:
            tables.set_properties(spark, ref, tables.retention_properties(days))
        tables.overwrite(spark, ref, _rows(spark, "first"), commit, REMOVED_SAMPLES)
    pinned = tables.current_version(spark, gold)
    for ref in (removed, gold):
        for run in ("second", "third"):
            tables.append(spark, ref, _rows(spark, run), commit, REMOVED_SAMPLES)
        tables.overwrite(spark, ref, _rows(spark, "last"), commit, REMOVED_SAMPLES)
    removed_before, gold_before = _data_files(removed), _data_files(gold)

    done = {u.table: u for u in maintain(spark, config)}

    assert set(done) == {"removed_samples", "gold_samples"}  # the tables that exist
    assert done["removed_samples"].zorder and done["gold_samples"].zorder
    operations = spark.sql(f"DESCRIBE HISTORY {removed.sql}").select("operation", "operationParameters").collect()
    optimize = next(r for r in operations if r["operation"] == "OPTIMIZE")
    assert "sample_id" in optimize["operationParameters"]["zOrderBy"]
    assert {"VACUUM START", "VACUUM END"} <= {r["operation"] for r in operations}
    # removed_samples (0 hours): the replaced files are gone; gold (30 days): every old file stays
    assert len(_data_files(removed)) < len(removed_before)
    assert gold_before <= _data_files(gold)
    assert tables.read(spark, gold, pinned).filter("run_id = 'first'").count() == 5  # the pinned version reads


def test_maintain_leaves_catalog_tables_to_predictive_optimisation(spark):
    with pytest.raises(ValueError, match="predictive optimisation"):
        maintain(spark, PipelineConfig(catalog="main.finevision"))
