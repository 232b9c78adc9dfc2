"""`finevision maintain`: upkeep of the pipeline's tables, which nothing else compacts or cleans.

Per table that exists (etl/schema.py's `TABLES`, or the ones named):
1. its retention (`tables.retention_properties`: `delta.deletedFileRetentionDuration` =
   maintain.vacuum_retain_hours, for gold at least maintain.gold_retention_days, with its log kept
   as long) and the column comments (`schema.COLUMN_DOCS`) are set where the table's differ;
2. `OPTIMIZE` compacts the small files every MERGE and append leaves, with `ZORDER BY` the column
   the table's readers reach rows by (`Table.cluster_by`: `sample_id`, or `image_id`);
3. `VACUUM` deletes the files no version inside that retention reads. It goes by the table
   property, as Delta 4 does whatever RETAIN says (it ignores RETAIN unless 0 hours) and as Unity
   Catalog's predictive optimisation does, so a version a training run or a release card pins
   stays readable for gold's retention whoever vacuums.

Only SQL (OPTIMIZE, VACUUM, DESCRIBE, ALTER TABLE), no session conf: it runs over Spark Connect and
on Databricks serverless. See docs/tables.md, "Upkeep", for what predictive optimisation does on
Unity Catalog managed tables.

    for upkeep in maintain(spark, config, dry_run=True):
        print(upkeep.line())
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pyspark.sql import SparkSession

from etl import tables
from etl.config import IDENTIFIER, PipelineConfig
from etl.schema import TABLES

log = logging.getLogger("finevision")


@dataclass(frozen=True)
class Upkeep:
    """What `maintain` did to one table (or, on a dry run, would do)."""

    table: str
    files_before: int
    files_after: int | None  # None on a dry run
    cluster_by: str | None
    retain_hours: int
    files_removed: int | None  # data files VACUUM deleted (dry run: would delete); None where unknown
    bytes_removed: int | None  # None on a dry run, or where the table's history has no VACUUM entry
    properties_set: tuple[str, ...] = ()
    comments_set: tuple[str, ...] = ()
    dry_run: bool = False

    def line(self) -> str:
        optimize = f"OPTIMIZE{f' ZORDER BY ({self.cluster_by})' if self.cluster_by else ''}"
        vacuum = f"VACUUM (retention {self.retain_hours} hours)"
        setup = [f"set {', '.join(self.properties_set)}"] if self.properties_set else []
        setup += [f"comment {len(self.comments_set)} column(s)"] if self.comments_set else []
        if self.dry_run:
            return "; ".join(
                [
                    f"{self.table}: would run {optimize} on {self.files_before} file(s)",
                    f"{vacuum} would delete {'?' if self.files_removed is None else self.files_removed} file(s)",
                    *(f"would {s}" for s in setup),
                ]
            )
        removed = "?" if self.files_removed is None else self.files_removed
        size = "?" if self.bytes_removed is None else self.bytes_removed
        return "; ".join(
            [
                f"{self.table}: {optimize}: files {self.files_before} -> {self.files_after}",
                f"{vacuum}: removed {removed} file(s), {size} bytes",
                *setup,
            ]
        )


def _detail(spark: SparkSession, ref: tables.TableRef) -> tuple[int, dict[str, str]]:
    """The number of data files of the table's current version, and its properties."""
    row = spark.sql(f"DESCRIBE DETAIL {ref.sql}").select("numFiles", "properties").first()
    if row is None:
        raise RuntimeError(f"DESCRIBE DETAIL {ref} returned nothing")
    return int(row["numFiles"] or 0), dict(row["properties"] or {})


def _vacuum_metrics(spark: SparkSession, ref: tables.TableRef, after: int) -> tuple[int | None, int | None]:
    """Files and bytes the VACUUM committed after version `after` deleted, from its history entries
    (Delta logs VACUUM START with the size to delete and VACUUM END with the files deleted)."""
    history = spark.sql(f"DESCRIBE HISTORY {ref.sql} LIMIT {tables.HISTORY_SCAN}")
    rows = history.filter(f"version > {int(after)}").select("operation", "operationMetrics").collect()
    metrics = {r["operation"]: r["operationMetrics"] or {} for r in rows}
    start, end = metrics.get("VACUUM START"), metrics.get("VACUUM END")
    size = int(start["sizeOfDataToDelete"]) if start and "sizeOfDataToDelete" in start else None
    files = int(end["numDeletedFiles"]) if end and "numDeletedFiles" in end else None
    return files, size


def maintain(
    spark: SparkSession, config: PipelineConfig, names: list[str] | None = None, dry_run: bool = False
) -> list[Upkeep]:
    """Upkeep of each existing table of `names` (default: every declared table), in order; what was
    done, or on a dry run what would be (nothing is written then)."""
    unknown = [name for name in names or [] if name not in TABLES]
    if unknown:
        raise ValueError(f"maintain: unknown table(s) {unknown}; the tables are {sorted(TABLES)}")
    done = []
    for name in names or list(TABLES):
        ref = tables.TableRef.of(config, name)
        if not tables.exists(spark, ref):
            log.info("[maintain] %s: not written yet, skipped", name)
            continue
        upkeep = _upkeep(spark, config, ref, dry_run)
        log.info("[maintain] %s", upkeep.line())
        done.append(upkeep)
    return done


def _upkeep(spark: SparkSession, config: PipelineConfig, ref: tables.TableRef, dry_run: bool) -> Upkeep:
    declared = TABLES[ref.name]
    columns = spark.sql(f"SELECT * FROM {ref.sql} LIMIT 0").schema
    cluster_by = declared.cluster_by if declared.cluster_by in columns.fieldNames() else None
    if cluster_by and not IDENTIFIER.match(cluster_by):
        raise ValueError(f"{ref.name}: cluster column {cluster_by!r} is not an identifier")
    comments = tables.column_comments(ref, columns)
    files_before, properties = _detail(spark, ref)
    wanted = tables.retention_properties(config, ref.name)
    hours = tables.retention_hours(config, ref.name)
    if dry_run:  # VACUUM DRY RUN goes by the table's retention now: listed only where it is already the wanted one
        unchanged = all(properties.get(k) == v for k, v in wanted.items())
        would_delete = spark.sql(f"VACUUM {ref.sql} DRY RUN").count() if unchanged else None
        return Upkeep(
            ref.name,
            files_before,
            None,
            cluster_by,
            hours,
            would_delete,
            None,
            tuple(k for k, v in wanted.items() if properties.get(k) != v),
            tuple(c for c, t in comments.items() if columns[c].metadata.get("comment") != t),
            dry_run=True,
        )
    properties_set = tuple(tables.set_properties(spark, ref, wanted))
    comments_set = tuple(tables.set_column_comments(spark, ref, comments))
    spark.sql(f"OPTIMIZE {ref.sql}" + (f" ZORDER BY (`{cluster_by}`)" if cluster_by else ""))
    files_after, _ = _detail(spark, ref)
    before_vacuum = tables.current_version(spark, ref)
    spark.sql(f"VACUUM {ref.sql}")  # by the table's delta.deletedFileRetentionDuration, just set
    files_removed, bytes_removed = _vacuum_metrics(spark, ref, before_vacuum or 0)
    return Upkeep(
        ref.name,
        files_before,
        files_after,
        cluster_by,
        hours,
        files_removed,
        bytes_removed,
        properties_set,
        comments_set,
    )
