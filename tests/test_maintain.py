"""`finevision maintain` (etl/maintain.py) on real Delta tables: OPTIMIZE clustered by the column
each table is read by, VACUUM never below a table's own retention, so a pinned gold version stays
readable by time travel while a table with a short retention loses its replaced files; column
comments from etl/schema.py's COLUMN_DOCS; a dry run that writes nothing; no session conf set.

Delta's behaviour these tests rely on (Databricks, "Table utility commands",
https://docs.databricks.com/delta/generate-manifest.html, and the VACUUM reference,
https://learn.microsoft.com/en-us/azure/databricks/sql/language-manual/delta-vacuum, read
2026-12-07; delta-io/delta `VacuumCommand.scala`): VACUUM deletes the data files no version inside
the retention reads (the table's `delta.deletedFileRetentionDuration`, 7 days by default), and
versions older than the retention can then no longer be read. Delta 4 ignores VACUUM's `RETAIN n
HOURS` unless n is 0 (`spark.databricks.delta.vacuum.retentionWindowIgnore.enabled`, logged "Vacuum
with retention threshold other than 0 hours is ignored"), and its safety check
(`spark.databricks.delta.retentionDurationCheck.enabled`) only refuses a RETAIN below the table's
property. So maintain sets the retention as the table property and runs VACUUM without RETAIN: no
test needs to turn the check off, and the first test shows the check, left on, does not stop a
table whose property says 0 hours.
"""

from __future__ import annotations

from importlib.metadata import version

import pytest

from etl import tables
from etl.config import PipelineConfig
from etl.maintain import maintain
from etl.schema import COLUMN_DOCS, GOLD_SAMPLES, REMOVED_SAMPLES, SAMPLES

COMMIT = tables.Commit(run_id="r", stage="export", config_hash="h", git_revision="g")
# VACUUM lists a table's folder in this many tasks (Spark's default 10,000, minutes on two cores)
LISTING = "spark.sql.sources.parallelPartitionDiscovery.parallelism"


@pytest.fixture(autouse=True)
def small_listing(spark):
    """A few listing tasks for these tiny tables, in this module only (a runtime SQL conf)."""
    before = spark.conf.get(LISTING, None)
    spark.conf.set(LISTING, "2")
    yield
    spark.conf.unset(LISTING) if before is None else spark.conf.set(LISTING, before)


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
    assert properties["delta.deletedFileRetentionDuration"] == "interval 720 hours"
    assert properties["delta.logRetentionDuration"] == "interval 720 hours"
    assert "delta.deletedFileRetentionDuration" not in tables.table_properties(spark, removed)

    done = {u.table: u for u in maintain(spark, config)}  # Delta's retention check left on

    assert set(done) == {"gold_samples", "removed_samples"}  # the tables that exist
    assert (done["gold_samples"].retain_hours, done["removed_samples"].retain_hours) == (720, 0)
    # the pinned export still reads by time travel; the replaced removals do not
    assert sorted(r["sample_id"] for r in tables.read(spark, gold, first_export).collect()) == [
        "first0",
        "first1",
        "first2",
    ]
    # (Delta 4.4 refuses it up front, naming the 0-hour retention; Delta 4.0, under `make
    # test-compat`, plans the read and fails on the first deleted file. VACUUM deleted them: below)
    delta_40 = version("delta-spark").startswith("4.0.")
    beyond_retention = "FILE_NOT_EXIST" if delta_40 else "DELTA_UNSUPPORTED_TIME_TRAVEL_BEYOND_DELETED_FILE_RETENTION"
    with pytest.raises(Exception, match=beyond_retention):
        tables.read(spark, removed, first_removals).collect()
    # the first overwrite's 2 files, and the 4 OPTIMIZE compacted
    assert done["removed_samples"].files_removed == 6 and done["removed_samples"].bytes_removed > 0
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
    assert done["removed_samples"].properties_set == ("delta.deletedFileRetentionDuration",)
    assert tables.table_properties(spark, removed)["delta.deletedFileRetentionDuration"] == "interval 0 hours"
    assert done["gold_samples"].properties_set == ()  # export set it already


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


def test_the_maintain_command_prints_one_line_per_table_and_lists_on_a_dry_run(spark, tmp_path):
    from typer.testing import CliRunner

    from etl.cli import app

    config = PipelineConfig(lakehouse=str(tmp_path))
    gold = tables.TableRef.of(config, "gold_samples")
    tables.overwrite(spark, gold, _gold(spark, "first"), COMMIT, GOLD_SAMPLES)
    tables.overwrite(spark, gold, _gold(spark, "second"), COMMIT, GOLD_SAMPLES)
    version = tables.current_version(spark, gold)
    runner, base = CliRunner(), ["--lakehouse", str(tmp_path), "--set", "mlflow.enabled=false"]

    listed = runner.invoke(app, [*base, "--dry-run", "maintain"])
    assert listed.exit_code == 0, listed.output
    assert (
        "gold_samples: would run OPTIMIZE on 2 file(s); VACUUM (retention 720 hours) would delete 0 file(s)"
        in listed.output
    )
    assert tables.current_version(spark, gold) == version  # nothing written

    done = runner.invoke(app, [*base, "maintain", "--table", "gold_samples"])
    assert done.exit_code == 0, done.output
    assert (
        "gold_samples: OPTIMIZE: files 2 -> 1; VACUUM (retention 720 hours): removed 0 file(s), 0 bytes" in done.output
    )

    unknown = runner.invoke(app, [*base, "maintain", "--table", "golden"])
    assert unknown.exit_code == 2 and "unknown table(s) ['golden']" in unknown.output
