"""`finevision maintain` (etl/maintain.py) on real Delta tables: OPTIMIZE clustered by the column
each table is read by, VACUUM never below a table's own retention, so a pinned gold version stays
readable by time travel while a table with a short retention loses its replaced files; column
comments from etl/schema.py's COLUMN_DOCS; a dry run that writes nothing; no session conf set.

Delta's documented behaviour these tests rely on ("Table utility commands",
https://docs.databricks.com/delta/generate-manifest.html, and the VACUUM reference,
https://learn.microsoft.com/en-us/azure/databricks/sql/language-manual/delta-vacuum, both read
2026-12-07): VACUUM deletes the data files no version inside the retention reads (default 7 days,
the table's `delta.deletedFileRetentionDuration` where set), after it versions older than the
retention can no longer be read, and a retention below 168 hours is refused unless
`spark.databricks.delta.retentionDurationCheck.enabled` is false (the first test checks that
refusal too). Only the test sets that conf, on its own session, and puts it back; maintain itself
never sets a conf.
"""

from __future__ import annotations

from contextlib import contextmanager

import pytest

from etl import tables
from etl.config import PipelineConfig
from etl.maintain import maintain
from etl.schema import COLUMN_DOCS, GOLD_SAMPLES, REMOVED_SAMPLES, SAMPLES

CHECK = "spark.databricks.delta.retentionDurationCheck.enabled"
COMMIT = tables.Commit(run_id="r", stage="export", config_hash="h", git_revision="g")


@contextmanager
def retention_check_off(spark):
    """Delta's safety check off for this block only (a retention below 168 hours is the point)."""
    before = spark.conf.get(CHECK, None)
    spark.conf.set(CHECK, "false")
    try:
        yield
    finally:
        spark.conf.unset(CHECK) if before is None else spark.conf.set(CHECK, before)


def _gold(spark, export: str, n: int = 3):
    rows = [
        {"source": "a", "sample_id": f"{export}{i}", "subset": "a", "category": "General VQA", "contaminated": False}
        for i in range(n)
    ]
    return spark.createDataFrame(rows, GOLD_SAMPLES).repartition(2)


def _removed(spark, run_id: str, n: int = 4):
    rows = [
        {"sample_id": f"s{i}", "subset": "a", "stage": "dedup", "reason": "r", "detail": "", "run_id": run_id}
        for i in range(n)
    ]
    return spark.createDataFrame(rows, REMOVED_SAMPLES).repartition(2)


def _history(spark, ref):
    return spark.sql(f"DESCRIBE HISTORY {ref.sql}").select("version", "operation", "operationParameters").collect()


def test_vacuum_keeps_a_pinned_gold_version_and_a_short_retention_table_loses_its_old_one(spark, tmp_path):
    config = PipelineConfig(lakehouse=str(tmp_path), maintain={"vacuum_retain_hours": 0, "gold_retention_days": 30})
    gold, removed = tables.TableRef.of(config, "gold_samples"), tables.TableRef.of(config, "removed_samples")
    first_export = tables.overwrite(spark, gold, _gold(spark, "first"), COMMIT, GOLD_SAMPLES)  # a training run pins it
    tables.overwrite(spark, gold, _gold(spark, "second"), COMMIT, GOLD_SAMPLES)
    first_removals = tables.overwrite(spark, removed, _removed(spark, "first"), COMMIT, REMOVED_SAMPLES)
    tables.overwrite(spark, removed, _removed(spark, "second"), COMMIT, REMOVED_SAMPLES)
    tables.append(spark, removed, _removed(spark, "third"), COMMIT, REMOVED_SAMPLES)
    # export made gold with the configured retention; removed_samples has Delta's default
    properties = tables.table_properties(spark, gold)
    assert properties["delta.deletedFileRetentionDuration"] == "interval 30 days"
    assert properties["delta.logRetentionDuration"] == "interval 30 days"
    assert "delta.deletedFileRetentionDuration" not in tables.table_properties(spark, removed)

    # with Delta's check on, gold's 720 hours pass
    assert [u.retain_hours for u in maintain(spark, config, ["gold_samples"])] == [720]

    with retention_check_off(spark):
        done = {u.table: u for u in maintain(spark, config)}

    assert set(done) == {"gold_samples", "removed_samples"}  # the tables that exist
    assert (done["gold_samples"].retain_hours, done["removed_samples"].retain_hours) == (720, 0)
    # the pinned export still reads by time travel; the replaced removals do not
    assert sorted(r["sample_id"] for r in tables.read(spark, gold, first_export).collect()) == [
        "first0",
        "first1",
        "first2",
    ]
    with pytest.raises(Exception, match="(?i)(not exist|not found|FileNotFound)"):
        tables.read(spark, removed, first_removals).collect()
    assert done["removed_samples"].files_removed >= 2 and done["removed_samples"].bytes_removed > 0
    assert done["gold_samples"].files_removed == 0 and done["gold_samples"].bytes_removed == 0
    # compacted, z-ordered by sample_id where the table is read by sample; gold (read whole) only compacted
    assert done["removed_samples"].files_before > done["removed_samples"].files_after == 1
    zorder = {
        ref.name: next(r for r in _history(spark, ref) if r["operation"] == "OPTIMIZE")["operationParameters"][
            "zOrderBy"
        ]
        for ref in (gold, removed)
    }
    assert zorder == {"gold_samples": "[]", "removed_samples": '["sample_id"]'}
    assert tables.read(spark, removed).count() == 8  # the current rows are untouched
    assert "removed 0 file(s)" not in done["removed_samples"].line()

    # with the check on, the configured 0 hours is refused (maintain does not turn the check off)
    with pytest.raises(Exception, match="(?i)retention"):
        maintain(spark, config, ["removed_samples"])


def test_columns_carry_the_schema_docs_on_create_and_maintain_adds_them_to_older_tables(spark, tmp_path):
    config = PipelineConfig(lakehouse=str(tmp_path))
    silver, gold = tables.TableRef.of(config, "silver_samples"), tables.TableRef.of(config, "gold_samples")
    # silver as an older version made it: no comments
    spark.sql(f"CREATE TABLE {silver.sql} ({SAMPLES.toDDL()}) USING delta")
    tables.overwrite(spark, gold, _gold(spark, "first"), COMMIT, GOLD_SAMPLES)
    tables.overwrite(spark, gold, _gold(spark, "second"), COMMIT, GOLD_SAMPLES)  # an overwrite keeps them

    def comments(ref):
        return {f.name: f.metadata.get("comment") for f in tables.read(spark, ref).schema.fields}

    assert comments(gold)["sample_id"] == COLUMN_DOCS["sample_id"]
    assert comments(gold)["contaminated"] == COLUMN_DOCS["contaminated"]
    assert comments(gold)["relevance_min"] is None  # not described
    assert set(comments(silver).values()) == {None}

    versions = {ref.name: tables.current_version(spark, ref) for ref in (silver, gold)}
    listed = {u.table: u for u in maintain(spark, config, dry_run=True)}
    assert {ref.name: tables.current_version(spark, ref) for ref in (silver, gold)} == versions  # nothing written
    assert set(listed["silver_samples"].comments_set) == set(SAMPLES.fieldNames())  # all seven are described
    assert listed["gold_samples"].comments_set == () and listed["gold_samples"].dry_run
    assert listed["silver_samples"].line().startswith("silver_samples: would run OPTIMIZE ZORDER BY (sample_id)")

    maintain(spark, config, ["silver_samples"])
    assert comments(silver) == {name: COLUMN_DOCS[name] for name in SAMPLES.fieldNames()}


def test_maintain_names_an_unknown_table_and_sets_no_session_conf_on_serverless(spark, tmp_path, monkeypatch):
    from pyspark.sql.conf import RuntimeConfig

    from etl.session import _SERVERLESS_MARK, is_serverless

    config = PipelineConfig(lakehouse=str(tmp_path))
    with pytest.raises(ValueError, match="unknown table.*'golden'"):
        maintain(spark, config, ["golden"])
    tables.overwrite(spark, tables.TableRef.of(config, "gold_samples"), _gold(spark, "x"), COMMIT, GOLD_SAMPLES)

    def refused(self, key, *args):
        raise AssertionError(f"maintain set the session conf {key} (serverless refuses it)")

    monkeypatch.setattr(spark, _SERVERLESS_MARK, True, raising=False)  # as the serverless profile marks it
    assert is_serverless(spark)
    monkeypatch.setattr(RuntimeConfig, "set", refused)
    monkeypatch.setattr(RuntimeConfig, "unset", refused)
    assert [u.table for u in maintain(spark, config)] == ["gold_samples"]
