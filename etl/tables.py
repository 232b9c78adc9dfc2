"""The one module that reads and writes Delta tables.

A `TableRef` is either a path under the lakehouse root or a metastore name
`catalog.schema.table`; stages never know which. Every data write is one DataFrame write that
carries its own `userMetadata` write option (run id, stage, config hash, git revision and a write
id), never session state: writers on threads of one session cannot swap each other's metadata, and
serverless compute (which refuses most session confs) takes it. The version a write returns is the
one whose metadata is its own in `DESCRIBE HISTORY`, not the newest (another writer may have
committed since).

    ref = TableRef.of(config, "silver_samples")
    df = read(spark, ref, version=3)
    version = merge_insert(spark, ref, new_rows, keys=["sample_id"], commit=commit, schema=SAMPLES)
"""

from __future__ import annotations

import json
import logging
import random
import re
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from etl.config import IDENTIFIER, PROJECT_ROOT, PipelineConfig

CONFLICT_RETRIES = 6
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
    if type(error).__name__ in CONFLICT_NAMES:
        return True
    condition = getattr(error, "getCondition", lambda: None)() or ""
    return condition.startswith(CONFLICT_ERROR_CLASSES)


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
    name: str
    path: str | None = None
    qualified_name: str | None = None

    @classmethod
    def of(cls, config: PipelineConfig, name: str) -> TableRef:
        if not IDENTIFIER.match(name):
            raise ValueError(f"table name {name!r} is not an identifier")
        if config.catalog:
            return cls(name=name, qualified_name=f"{config.catalog}.{name}")
        root = config.lakehouse
        if "://" not in root:
            from pathlib import Path

            root = str(Path(root).resolve())
        return cls(name=name, path=f"{root.rstrip('/')}/{name}")

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

    def metadata(self, write_id: str = "") -> str:
        """The commit's `userMetadata`; `write_id` tells apart the writes of one stage of one run."""
        fields = {"run_id": self.run_id, "stage": self.stage, "config_hash": self.config_hash}
        return json.dumps({**fields, "git": self.git_revision, "write": write_id}, sort_keys=True)


def build_info() -> dict[str, str] | None:
    """The version and commit an installed wheel was built from (hatch_build.py), None in a checkout."""
    from importlib.resources import files

    path = files("etl").joinpath("build_info.json")
    return json.loads(path.read_text()) if path.is_file() else None


def git_revision() -> str:
    """The commit of the running code: the wheel's build record, else the checkout's git HEAD."""
    info = build_info()
    if info:
        return info["git_revision"]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


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


def version_of(spark: SparkSession, ref: TableRef, metadata: str, read_version: int) -> int:
    """The version whose commit carries exactly `metadata` (a write's own, write id included):
    other writers may have committed after it, so the newest version need not be ours. A write
    that changed nothing (no new rows) records no commit (Delta skips empty commits): then the
    version it read, whose content it leaves as it was."""
    history = spark.sql(f"DESCRIBE HISTORY {ref.sql}").filter(F.col("userMetadata") == metadata)
    found = history.agg(F.max("version").alias("v")).first()
    return read_version if found is None or found["v"] is None else int(found["v"])


def _version_now(spark: SparkSession, ref: TableRef) -> int:
    version = current_version(spark, ref)
    if version is None:
        raise RuntimeError(f"table {ref} does not exist after it was created")
    return version


def _save(writer, ref: TableRef) -> None:
    writer.saveAsTable(ref.qualified_name) if ref.qualified_name else writer.save(ref.location)


def read(spark: SparkSession, ref: TableRef, version: int | None = None) -> DataFrame:
    """The table, pinned to `version` when given (time travel)."""
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    return reader.table(ref.qualified_name) if ref.qualified_name else reader.load(ref.path)


def ensure_table(
    spark: SparkSession,
    ref: TableRef,
    schema: StructType,
    constraints: dict[str, str] | None = None,
    partition_by: tuple[str, ...] = (),
) -> None:
    """Create the table with its schema (CHECK constraints, partition columns) if it does not exist
    yet; add the columns and struct fields a newer schema has to a table an older version wrote
    (their old rows read null)."""
    retry_on_conflict(lambda: _create_table(spark, ref, schema, constraints, partition_by), f"create {ref}")


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
        return
    for name in partition_by:
        if not IDENTIFIER.match(name):
            raise ValueError(f"partition column {name!r} is not an identifier")
    partitions = f" PARTITIONED BY ({', '.join(partition_by)})" if partition_by else ""
    spark.sql(f"CREATE TABLE IF NOT EXISTS {ref.sql} ({schema.toDDL()}) USING delta{partitions}")
    for name, expression in (constraints or {}).items():
        if not IDENTIFIER.match(name):
            raise ValueError(f"constraint name {name!r} is not an identifier")
        spark.sql(f"ALTER TABLE {ref.sql} ADD CONSTRAINT {name} CHECK ({expression})")


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
) -> int:
    """Insert rows whose key is not in the table yet; returns the version of this write's commit.

    Rows are deduplicated on the key first, so re-running a stage after a crash converges to
    the same table with no duplicates. One append of the new rows (an anti-join against the table)
    that carries the commit metadata as a write option; it reads the table inside its own
    transaction, so a writer that committed meanwhile makes it fail and retry against the new table.
    `target_filter` (an SQL predicate on `t.`, the table row, that every row the new rows could
    match satisfies, e.g. a key range) limits the rows compared. With `replace_when` (an SQL
    predicate on `t.` and `s.`, the new row) a matched row is replaced where it holds, e.g. a failed
    rating that a retry now fills: then `target_filter` is required, and the write replaces the
    filter's range (`replaceWhere`) with its old rows less the replaced ones plus the new rows.
    """
    for key in keys:
        if key not in rows.columns:
            raise ValueError(f"merge key {key!r} is not a column of the rows for {ref.name}")
    if replace_when and not target_filter:
        raise ValueError(f"{ref.name}: replace_when needs a target_filter (the range the write replaces)")
    ensure_table(spark, ref, schema, constraints)
    matched = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in keys)  # null-safe: keys may be null
    if target_filter:
        matched = f"({target_filter}) AND {matched}"
    source = rows.select(*schema.fieldNames()).dropDuplicates(keys).alias("s")
    metadata = commit.metadata(uuid.uuid4().hex)
    read_version = _version_now(spark, ref)

    def write() -> None:  # a retry re-reads the table, so rows another writer inserted meanwhile match
        nonlocal read_version
        read_version = _version_now(spark, ref)
        table = read(spark, ref, read_version).alias("t")
        if replace_when is None:
            writer = source.join(table, F.expr(matched), "left_anti").write.format("delta").mode("append")
        else:
            assert target_filter is not None
            replace = f"{matched} AND coalesce({replace_when}, false)"
            kept = table.filter(F.expr(target_filter)).join(source, F.expr(replace), "left_anti")
            new = source.join(table, F.expr(f"{matched} AND NOT coalesce({replace_when}, false)"), "left_anti")
            writer = kept.select(*schema.fieldNames()).unionByName(new).write.format("delta").mode("overwrite")
            writer = writer.option("replaceWhere", unqualified(target_filter, "t"))
        _save(writer.option("userMetadata", metadata), ref)

    retry_on_conflict(write, f"merge into {ref}")
    return version_of(spark, ref, metadata, read_version)


STRING_LITERAL = re.compile(r"'(?:[^'\\]|\\.)*'")


def unqualified(predicate: str, alias: str) -> str:
    """`predicate` with the `alias.` qualifier dropped outside string literals (`t.a < 'x.t.'` ->
    `a < 'x.t.'`): the same condition over the table's own columns, as `replaceWhere` takes it."""
    qualifier = re.compile(rf"(?<![\w.`]){re.escape(alias)}\.")
    parts, last = [], 0
    for literal in STRING_LITERAL.finditer(predicate):
        parts += [qualifier.sub("", predicate[last : literal.start()]), literal.group()]
        last = literal.end()
    return "".join([*parts, qualifier.sub("", predicate[last:])])


def retention_properties(days: int) -> dict[str, str]:
    """Table properties that keep every version of the last `days` days readable: VACUUM (by hand
    or by Unity Catalog's predictive optimisation) keeps their data files, log cleanup their commits."""
    interval = f"interval {days} days"
    return {"delta.deletedFileRetentionDuration": interval, "delta.logRetentionDuration": interval}


def set_properties(spark: SparkSession, ref: TableRef, properties: dict[str, str]) -> None:
    """Set the table properties that differ from `properties` (no commit when none does)."""
    current = {r["key"]: r["value"] for r in spark.sql(f"SHOW TBLPROPERTIES {ref.sql}").collect()}
    changed = {key: value for key, value in properties.items() if current.get(key) != value}
    if changed:
        pairs = ", ".join(f"{sql_string(key)} = {sql_string(value)}" for key, value in changed.items())
        spark.sql(f"ALTER TABLE {ref.sql} SET TBLPROPERTIES ({pairs})")


def sql_string(value: str) -> str:
    """`value` as a Spark SQL string literal (quotes and backslashes escaped)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def append(spark: SparkSession, ref: TableRef, rows: DataFrame, commit: Commit, schema: StructType) -> int:
    ensure_table(spark, ref, schema)
    metadata, read_version = commit.metadata(uuid.uuid4().hex), _version_now(spark, ref)
    writer = rows.select(*schema.fieldNames()).write.format("delta").mode("append")
    _save(writer.option("userMetadata", metadata), ref)
    return version_of(spark, ref, metadata, read_version)


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
    metadata, read_version = commit.metadata(uuid.uuid4().hex), _version_now(spark, ref)
    _save(writer.option("userMetadata", metadata).option("overwriteSchema", "false"), ref)
    return version_of(spark, ref, metadata, read_version)


def scratch(spark: SparkSession, ref: TableRef, rows: DataFrame) -> DataFrame:
    """`rows` written to the scratch table `ref` (replacing what it held) and read back, pinned to
    that version: how a result is computed once and read many times where caching is refused
    (Databricks serverless). A scratch table belongs to one stage, which alone writes it."""
    _save(rows.write.format("delta").mode("overwrite").option("overwriteSchema", "true"), ref)
    version = current_version(spark, ref)
    assert version is not None
    return read(spark, ref, version)
