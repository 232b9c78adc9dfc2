"""The one module that reads and writes Delta tables.

A `TableRef` is either a path under the lakehouse root or a metastore name
`catalog.schema.table`; stages never know which. Writes carry `userMetadata` (run id, config hash,
git revision) so `DESCRIBE HISTORY` says which run made each version.

    ref = TableRef.of(config, "silver_samples")
    df = read(spark, ref, version=3)
    version = merge_insert(spark, ref, new_rows, keys=["sample_id"], commit=commit, schema=SAMPLES)
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import StructField, StructType

from etl.config import IDENTIFIER, PipelineConfig
from etl.confs import settable
from etl.schema import COLUMN_DOCS, TABLES

USER_METADATA_CONF = "spark.databricks.delta.commitInfo.userMetadata"
CONFLICT_RETRIES = 6
# A writer finds its own commit among the table's newest entries (others may commit after it).
HISTORY_SCAN = 100
# Delta's optimistic-concurrency failures: another writer committed first (by class, as delta-spark
# names them on classic sessions, or by error class, as any client reports them).
CONFLICT_NAMES = {
    "ConcurrentAppendException",
    "ConcurrentDeleteReadException",
    "ConcurrentDeleteDeleteException",
    "ConcurrentTransactionException",
    "ConcurrentWriteException",
    "MetadataChangedException",
    "ProtocolChangedException",
    "DeltaConcurrentModificationException",
}
# DELTA_CREATE_TABLE_WITH_NON_EMPTY_LOCATION: two writers creating one path-based table at once, the
# loser sees the winner's folder before its first commit (a folder that is not Delta at all fails
# the same way, after the retries).
CONFLICT_ERROR_CLASSES = (
    "DELTA_CONCURRENT_",
    "DELTA_METADATA_CHANGED",
    "DELTA_PROTOCOL_CHANGED",
    "DELTA_CREATE_TABLE_WITH_NON_EMPTY_LOCATION",
)

log = logging.getLogger("finevision")
T = TypeVar("T")


def is_write_conflict(error: BaseException) -> bool:
    if type(error).__name__ in CONFLICT_NAMES or _java_class(error) in CONFLICT_NAMES:
        return True
    condition = getattr(error, "getCondition", lambda: None)() or ""
    return condition.startswith(CONFLICT_ERROR_CLASSES)


def _java_class(error: BaseException) -> str:
    """The JVM exception's class name where the client passed it on unconverted: pyspark 4.0 raises
    Delta's own exceptions from `spark.sql` as a bare Py4JJavaError (4.1 converts them)."""
    java = getattr(error, "java_exception", None)
    if java is None:
        return ""
    try:
        return str(java.getClass().getSimpleName())
    except Exception:  # noqa: BLE001 - a detached gateway or another shape: not a recognisable conflict
        return ""


def retry_on_conflict[T](write: Callable[[], T], what: str) -> T:
    """Run an idempotent Delta write, again after a growing random pause when another writer
    committed first (e.g. decontaminate and dedup both merging into removed_samples at once)."""
    for attempt in range(CONFLICT_RETRIES + 1):
        try:
            return write()
        except Exception as error:
            if attempt == CONFLICT_RETRIES or not is_write_conflict(error):
                raise
            pause = random.uniform(0.5, 1.5) * 2**attempt
            log.warning("%s: another writer committed first (%s); retrying in %.1fs", what, type(error).__name__, pause)
            time.sleep(pause)
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class TableRef:
    """Where a table is, and the table properties every write keeps (`properties`, set on create and
    wherever they differ: a pinned table's retention, see `retention_properties`; `finevision
    maintain` sets the other tables' retention)."""

    name: str
    path: str | None = None
    qualified_name: str | None = None
    properties: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, config: PipelineConfig, name: str) -> TableRef:
        if not IDENTIFIER.match(name):
            raise ValueError(f"table name {name!r} is not an identifier")
        declared = TABLES.get(name)
        pinned = retention_properties(config, name) if declared and declared.pinned else {}
        properties = tuple(sorted(pinned.items()))
        if config.catalog:
            return cls(name=name, qualified_name=f"{config.catalog}.{name}", properties=properties)
        root = config.lakehouse
        if "://" not in root:
            from pathlib import Path

            root = str(Path(root).resolve())
        return cls(name=name, path=f"{root.rstrip('/')}/{name}", properties=properties)

    @property
    def location(self) -> str:
        """The storage path of a path-addressed table."""
        if self.path is None:
            raise ValueError(f"table {self.name} is the catalog table {self.qualified_name}, not a path")
        return self.path

    @property
    def sql(self) -> str:
        """How SQL names this table: a catalog name, or delta.`path` (path is escaped)."""
        if self.qualified_name:
            return self.qualified_name
        return "delta.`" + self.location.replace("`", "``") + "`"

    def __str__(self) -> str:
        return self.qualified_name or self.location


@dataclass(frozen=True)
class Commit:
    """What every commit of a run says about itself (Delta `userMetadata`)."""

    run_id: str
    stage: str
    config_hash: str
    git_revision: str

    def metadata(self, write_id: str | None = None) -> str:
        """The JSON of the commit; `write_id` (one per write) lets the writer find its own version."""
        fields = {"run_id": self.run_id, "stage": self.stage, "config_hash": self.config_hash, "git": self.git_revision}
        return json.dumps(fields | ({"write": write_id} if write_id else {}), sort_keys=True)


def exists(spark: SparkSession, ref: TableRef) -> bool:
    return current_version(spark, ref) is not None


def current_version(spark: SparkSession, ref: TableRef) -> int | None:
    """The table's latest version, None where there is no Delta table. SQL, as everything here that
    touches the Delta log: delta-spark's `DeltaTable` API does not exist over Spark Connect."""
    if ref.qualified_name and not spark.catalog.tableExists(ref.qualified_name):
        return None
    try:
        latest = spark.sql(f"DESCRIBE HISTORY {ref.sql} LIMIT 1").select("version").first()
    except AnalysisException as error:
        if ref.path and error.getCondition() == "DELTA_TABLE_ONLY_OPERATION":  # no table at the path
            return None
        raise
    return None if latest is None else int(latest[0])


def _written_version(spark: SparkSession, ref: TableRef, write_id: str) -> int:
    """The version this write committed: the newest history entry carrying its `write_id`, not the
    table's newest version, which a writer that committed after it (decontaminate and dedup into
    removed_samples at once) may own. A MERGE that changed nothing may commit nothing: then the
    latest version holds the writer's rows."""
    history = spark.sql(f"DESCRIBE HISTORY {ref.sql} LIMIT {HISTORY_SCAN}").select("version", "userMetadata")
    for row in history.collect():
        if write_id in (row["userMetadata"] or ""):
            return int(row["version"])
    version = current_version(spark, ref)
    if version is None:
        raise RuntimeError(f"table {ref} has no version after a write")
    return version


def read(spark: SparkSession, ref: TableRef, version: int | None = None) -> DataFrame:
    """The table, pinned to `version` when given (time travel)."""
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    return reader.table(ref.qualified_name) if ref.qualified_name else reader.load(ref.path)


FILE_RETENTION = "delta.deletedFileRetentionDuration"
LOG_RETENTION = "delta.logRetentionDuration"


def retention_hours(config: PipelineConfig, name: str) -> int:
    """How long VACUUM keeps the files of a pipeline table's replaced versions: maintain.vacuum_retain_hours,
    and for a pinned table (gold) at least maintain.gold_retention_days."""
    hours = config.maintain.vacuum_retain_hours
    declared = TABLES.get(name)
    if declared and declared.pinned:
        hours = max(hours, config.maintain.gold_retention_days * 24)
    return hours


def retention_properties(config: PipelineConfig, name: str) -> dict[str, str]:
    """The retention a pipeline table carries as table properties, which is what VACUUM goes by
    (Delta 4 ignores VACUUM's RETAIN argument unless it is 0 hours; Unity Catalog's predictive
    optimisation reads the property): its data files for `retention_hours`, and for a pinned table
    its log as long, so each version of that window reads by time travel."""
    interval = f"interval {retention_hours(config, name)} hours"
    declared = TABLES.get(name)
    if declared and declared.pinned:
        return {FILE_RETENTION: interval, LOG_RETENTION: interval}
    return {FILE_RETENTION: interval}


def table_properties(spark: SparkSession, ref: TableRef) -> dict[str, str]:
    return {r["key"]: r["value"] for r in spark.sql(f"SHOW TBLPROPERTIES {ref.sql}").collect()}


def set_properties(spark: SparkSession, ref: TableRef, properties: dict[str, str]) -> dict[str, str]:
    """Set those of `properties` whose value on the table differs (no commit when none does); the
    ones set."""
    current = table_properties(spark, ref)
    changed = {key: value for key, value in properties.items() if current.get(key) != value}
    if changed:
        pairs = ", ".join(f"{sql_string(key)} = {sql_string(value)}" for key, value in changed.items())
        with _session_lock(spark):
            spark.sql(f"ALTER TABLE {ref.sql} SET TBLPROPERTIES ({pairs})")
    return changed


def column_comments(ref: TableRef, schema: StructType) -> dict[str, str]:
    """The comments (schema.COLUMN_DOCS) of `schema`'s top-level columns where `ref` is a pipeline
    table (schema.TABLES); none for other tables."""
    if ref.name not in TABLES:
        return {}
    return {name: COLUMN_DOCS[name] for name in schema.fieldNames() if name in COLUMN_DOCS}


def set_column_comments(spark: SparkSession, ref: TableRef, comments: dict[str, str]) -> list[str]:
    """Give the table's columns `comments` where theirs differ (one ALTER COLUMN commit each); the
    columns changed. Columns the table lacks are left out."""
    fields = {f.name: f for f in spark.sql(f"SELECT * FROM {ref.sql} LIMIT 0").schema.fields}
    changed = [
        name for name, text in comments.items() if name in fields and fields[name].metadata.get("comment") != text
    ]
    with _session_lock(spark):
        for name in changed:
            if not IDENTIFIER.match(name):
                raise ValueError(f"column {name!r} of {ref.name} is not an identifier")
            spark.sql(f"ALTER TABLE {ref.sql} ALTER COLUMN `{name}` COMMENT {sql_string(comments[name])}")
    return changed


def _commented(schema: StructType, comments: dict[str, str]) -> StructType:
    """`schema` with `comments` in its fields' metadata, where StructType.toDDL writes them as COMMENT."""
    return StructType(
        [
            StructField(f.name, f.dataType, f.nullable, {**f.metadata, "comment": comments[f.name]})
            if f.name in comments
            else f
            for f in schema.fields
        ]
    )


def ensure_table(
    spark: SparkSession,
    ref: TableRef,
    schema: StructType,
    constraints: dict[str, str] | None = None,
    partition_by: tuple[str, ...] = (),
) -> None:
    """Create the table with its schema (CHECK constraints, partition columns, column comments,
    `ref.properties`) if it does not exist yet; add the columns and struct fields a newer schema has
    to a table an older version wrote (their old rows read null), and set `ref.properties` where
    the table's differ."""

    def create() -> None:
        with _session_lock(spark):  # no other thread's MERGE metadata is set on the session meanwhile
            _create_table(spark, ref, schema, constraints, partition_by)

    retry_on_conflict(create, f"create {ref}")


def missing_fields(existing: StructType, wanted: StructType, prefix: str = "") -> list[str]:
    """ADD COLUMNS entries (`a`.`b` TYPE AFTER `c`) for the fields of `wanted` that `existing`
    lacks, struct fields included; a field whose type changed is not an addition and is left alone."""
    added = []
    for index, field in enumerate(wanted.fields):
        path = f"{prefix}`{field.name}`"
        if field.name not in existing.fieldNames():
            after = f" AFTER `{wanted.fields[index - 1].name}`" if index else " FIRST"
            added.append(f"{path} {field.dataType.simpleString()}{after}")
        elif isinstance(field.dataType, StructType):
            existing_type = existing[field.name].dataType
            if isinstance(existing_type, StructType):
                added += missing_fields(existing_type, field.dataType, f"{path}.")
    return added


def _create_table(
    spark: SparkSession,
    ref: TableRef,
    schema: StructType,
    constraints: dict[str, str] | None,
    partition_by: tuple[str, ...],
) -> None:
    if exists(spark, ref):
        added = missing_fields(spark.sql(f"SELECT * FROM {ref.sql} LIMIT 0").schema, schema)
        if added:
            log.info("%s: adding %s", ref, ", ".join(added))
            spark.sql(f"ALTER TABLE {ref.sql} ADD COLUMNS ({', '.join(added)})")
        if ref.properties:
            set_properties(spark, ref, dict(ref.properties))
        return
    for name in partition_by:
        if not IDENTIFIER.match(name):
            raise ValueError(f"partition column {name!r} is not an identifier")
    partitions = f" PARTITIONED BY ({', '.join(partition_by)})" if partition_by else ""
    pairs = ", ".join(f"{sql_string(key)} = {sql_string(value)}" for key, value in ref.properties)
    properties = f" TBLPROPERTIES ({pairs})" if pairs else ""
    ddl = _commented(schema, column_comments(ref, schema)).toDDL()
    spark.sql(f"CREATE TABLE IF NOT EXISTS {ref.sql} ({ddl}) USING delta{partitions}{properties}")
    for name, expression in (constraints or {}).items():
        if not IDENTIFIER.match(name):
            raise ValueError(f"constraint name {name!r} is not an identifier")
        spark.sql(f"ALTER TABLE {ref.sql} ADD CONSTRAINT {name} CHECK ({expression})")


_LOCKS_LOCK = threading.Lock()


def _session_lock(spark: SparkSession) -> threading.RLock:
    """One lock per session for the SQL that commits: the session conf carrying a MERGE's metadata
    is set only while the lock is held."""
    with _LOCKS_LOCK:
        lock = getattr(spark, "_finevision_commit_lock", None)
        if lock is None:
            lock = threading.RLock()
            spark._finevision_commit_lock = lock  # type: ignore[attr-defined]
        return lock


class _commit_metadata:
    """Sets Delta's commit userMetadata for the SQL inside the block (a MERGE has no write option
    for it). The session conf is shared by the session's threads, so one block runs at a time per
    session: a writer on another thread never commits under this writer's metadata.

    Databricks serverless does not list the conf among the properties it lets a session set, so
    there the MERGE commits without userMetadata (logged) and `_written_version` falls back to
    the table's newest version; writes through the DataFrameWriter carry theirs as an option."""

    def __init__(self, spark: SparkSession, metadata: str):
        self.spark, self.lock = spark, _session_lock(spark)
        self.values = settable(spark, {USER_METADATA_CONF: metadata}, "MERGE commit metadata")

    def __enter__(self):
        self.lock.acquire()
        try:
            for key, value in self.values.items():
                self.spark.conf.set(key, value)
        except BaseException:
            self.lock.release()
            raise

    def __exit__(self, *exc):
        try:
            for key in self.values:
                self.spark.conf.unset(key)
        finally:
            self.lock.release()


def merge_insert(
    spark: SparkSession,
    ref: TableRef,
    rows: DataFrame,
    keys: list[str],
    commit: Commit,
    schema: StructType,
    constraints: dict[str, str] | None = None,
    replace_when: str | None = None,
    target_filter: str | None = None,
    owned_rows: str | None = None,
) -> int:
    """Insert rows whose key is not in the table yet (insert-only MERGE); returns the new version.

    Rows are deduplicated on the key first, so re-running a stage after a crash converges to
    the same table with no duplicates. With `replace_when` (an SQL predicate on `t.`, the table
    row, and `s.`, the new row) a matched row is replaced where it holds, e.g. a failed rating
    that a retry now fills. `target_filter` (an SQL predicate on `t.` that every row the new rows
    could match satisfies, e.g. a key range) joins the merge condition, so Delta skips the files
    outside it instead of reading the whole table for every commit. `owned_rows` (an SQL predicate
    on `t.`) names the rows the writer owns: those no new row matches are deleted, so the owned rows
    become exactly the new ones (e.g. a stage's removals under its current configuration).
    """
    if owned_rows and target_filter:  # rows outside the filter would read as unmatched and be deleted
        raise ValueError("merge_insert: owned_rows and target_filter cannot be combined")
    for key in keys:
        if key not in rows.columns:
            raise ValueError(f"merge key {key!r} is not a column of the rows for {ref.name}")
    ensure_table(spark, ref, schema, constraints)
    condition = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in keys)  # null-safe: keys may be null
    if target_filter:
        condition = f"({target_filter}) AND {condition}"
    source = rows.select(*schema.fieldNames()).dropDuplicates(keys)

    view = f"finevision_merge_{uuid.uuid4().hex}"  # the source, named for SQL, in this session only
    matched = f"WHEN MATCHED AND ({replace_when}) THEN UPDATE SET * " if replace_when else ""
    statement = f"MERGE INTO {ref.sql} AS t USING {view} AS s ON {condition} {matched}WHEN NOT MATCHED THEN INSERT *"
    if owned_rows:
        statement += f" WHEN NOT MATCHED BY SOURCE AND ({owned_rows}) THEN DELETE"

    write_id = uuid.uuid4().hex

    def merge() -> None:  # a retry re-reads the table, so rows another writer inserted meanwhile match
        with _commit_metadata(spark, commit.metadata(write_id)):
            spark.sql(statement)

    source.createOrReplaceTempView(view)
    try:
        retry_on_conflict(merge, f"merge into {ref}")
    finally:
        spark.catalog.dropTempView(view)
    return _written_version(spark, ref, write_id)


def sql_string(value: str) -> str:
    """`value` as a Spark SQL string literal (quotes and backslashes escaped)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def append(spark: SparkSession, ref: TableRef, rows: DataFrame, commit: Commit, schema: StructType) -> int:
    ensure_table(spark, ref, schema)
    writer = rows.select(*schema.fieldNames()).write.format("delta").mode("append")
    write_id = uuid.uuid4().hex
    writer = writer.option("userMetadata", commit.metadata(write_id))
    writer.saveAsTable(ref.qualified_name) if ref.qualified_name else writer.save(ref.location)
    return _written_version(spark, ref, write_id)


def overwrite(
    spark: SparkSession,
    ref: TableRef,
    rows: DataFrame,
    commit: Commit,
    schema: StructType,
    partition_by: tuple[str, ...] = (),
) -> int:
    """Replace the table's content (derived tables such as statistics); history keeps the old.
    With `partition_by`, a read filtered on those columns opens only the matching files."""
    ensure_table(spark, ref, schema, partition_by=partition_by)
    writer = rows.select(*schema.fieldNames()).write.format("delta").mode("overwrite")
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    write_id = uuid.uuid4().hex
    writer = writer.option("userMetadata", commit.metadata(write_id)).option("overwriteSchema", "false")
    writer.saveAsTable(ref.qualified_name) if ref.qualified_name else writer.save(ref.location)
    return _written_version(spark, ref, write_id)
