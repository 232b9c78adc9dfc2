"""Run bookkeeping: the `pipeline_runs` Delta table and the MLflow record of a pipeline run (a
parent run with a nested run per stage, etl/tracking.py).

Per stage it records start and end, the versions it read and wrote, rows in, out and dropped by
reason, so any table version can be traced to the run, config and code that made it.
"""

from __future__ import annotations

import logging
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal, overload

from pydantic import BaseModel
from pyspark.sql import DataFrame, SparkSession

from etl import tables
from etl.build_info import build_info
from etl.config import PipelineConfig
from etl.reuse import Scratch
from etl.schema import PIPELINE_RUNS, QUARANTINE, REMOVED_SAMPLES
from etl.session import is_connect
from etl.stages.quarantine import quarantine_rows

if TYPE_CHECKING:
    from etl.tracking import Tracker

log = logging.getLogger("finevision")


class MissingTableError(ValueError):
    """A table a reader needs was never written."""


def producer(name: str) -> str:
    """The stage that writes table `name` (\"the pipeline\" for tables no stage writes)."""
    from etl.jobs import STAGES

    return next((stage.name for stage in STAGES if name in stage.writes), "the pipeline")


@overload
def read_pinned(
    spark: SparkSession, config: PipelineConfig, name: str, versions: dict[str, int], required: Literal[True] = ...
) -> DataFrame: ...
@overload
def read_pinned(
    spark: SparkSession, config: PipelineConfig, name: str, versions: dict[str, int], required: bool
) -> DataFrame | None: ...
def read_pinned(
    spark: SparkSession, config: PipelineConfig, name: str, versions: dict[str, int], required: bool = True
) -> DataFrame | None:
    """Table `name` pinned to its current version, which `versions` records under the name. A table
    never written is None when not `required`, else a MissingTableError naming the stage that writes it."""
    ref = tables.TableRef.of(config, name)
    version = tables.current_version(spark, ref)
    if version is None:
        if required:
            raise MissingTableError(f"table {name} ({ref}) does not exist; run `finevision {producer(name)}` first")
        return None
    versions[name] = version
    return tables.read(spark, ref, version)


@dataclass
class StageReport:
    stage: str
    started_at: datetime
    ended_at: datetime | None = None
    status: str = "running"
    input_versions: dict[str, int] = field(default_factory=dict)
    output_versions: dict[str, int] = field(default_factory=dict)
    rows_in: int = 0
    rows_out: int = 0
    dropped: dict[str, int] = field(default_factory=dict)  # rows sent to quarantine, by reason
    counters: dict[str, int] = field(default_factory=dict)  # anything else worth counting
    mlflow_run_id: str | None = None  # the stage's MLflow run, nested under the pipeline run's

    def count_outcomes(self, counts: dict[str | None, int]) -> None:
        """Rows in, out (reason None) and dropped by reason, from a stage's rows per reject reason."""
        self.rows_in = sum(counts.values())
        self.rows_out = counts.get(None, 0)
        self.dropped = {reason: n for reason, n in counts.items() if reason is not None}

    @property
    def seconds(self) -> float:
        """Run time so far, or in all once the stage has ended."""
        return ((self.ended_at or datetime.now(UTC)) - self.started_at).total_seconds()


class PipelineRun:
    """One invocation of the CLI: a run id, its commits' metadata, and its stage reports.

    `parent_key` names the pipeline run this invocation is part of, where its stages run as
    separate processes (a Databricks job run's tasks, EMR steps): every invocation given the same
    key records its stages under one MLflow parent run. Without it the invocation is the parent."""

    def __init__(self, spark: SparkSession, config: PipelineConfig, command: str, parent_key: str | None = None):
        self.spark, self.config, self.command = spark, config, command
        self.run_id = uuid.uuid4().hex[:16]
        self.config_hash = config.config_hash()
        build = build_info()  # the wheel's version and commit (etl/build_info.py)
        self.git_revision, self.package_version = build.commit, build.version
        self.reports: list[StageReport] = []
        self.tracker: Tracker | None = None
        self.mlflow_run_id: str | None = None  # the MLflow parent run of the pipeline run
        if config.mlflow.enabled:
            self._start_mlflow(parent_key)

    def _start_mlflow(self, parent_key: str | None) -> None:
        from etl.tracking import Tracker

        build_tags = {
            "finevision.version": self.package_version,
            "git_revision": self.git_revision,
            "mlflow.source.git.commit": self.git_revision,  # MLflow's own tag: the UI shows it
        }
        # a shared parent gathers several invocations, each with its own run id and command
        own = {"finevision.run_id": self.run_id, "command": self.command}
        self.tracker = Tracker.start(
            self.config.mlflow.tracking_uri,
            self.config.mlflow.experiment,
            run_name=f"pipeline-{parent_key}" if parent_key else f"{self.command}-{self.run_id}",
            tags=build_tags | ({} if parent_key else own),
            params={"config_hash": self.config_hash, "lakehouse": self.config.lakehouse, **_flat_params(self.config)},
            key=parent_key,
        )
        self.mlflow_run_id = self.tracker.parent_id
        self._stage_tags = build_tags | own | {"config_hash": self.config_hash}

    def commit(self, stage: str) -> tables.Commit:
        return tables.Commit(self.run_id, stage, self.config_hash, self.git_revision)

    def scratch(self) -> Scratch:
        """Scratch Delta tables for a block of this run's work (etl/reuse.py), dropped when it ends."""
        return Scratch(self.spark, self.config)

    def table(self, name: str) -> tables.TableRef:
        return tables.TableRef.of(self.config, name)

    def read_input(self, report: StageReport, name: str) -> DataFrame:
        """A stage's input table, pinned to its current version, which the report records."""
        try:
            return read_pinned(self.spark, self.config, name, report.input_versions)
        except MissingTableError as error:
            raise MissingTableError(f"{report.stage}: {error}") from None

    def read_optional_input(self, report: StageReport, name: str) -> DataFrame | None:
        """As `read_input`, for a table only some configurations write: None (logged) where it is absent."""
        frame = read_pinned(self.spark, self.config, name, report.input_versions, required=False)
        if frame is None:
            log.info("[%s] %s does not exist: treated as empty", report.stage, name)
        return frame

    def write_quarantine(self, report: StageReport, rejected: DataFrame, commit: tables.Commit) -> None:
        """The stage's rejected rows (reject_reason/reject_detail/subset/sample_id/source_ref/raw)
        merged into the quarantine table, whose new version the report records."""
        rows = quarantine_rows(rejected, report.stage, self.run_id)
        report.output_versions["quarantine"] = tables.merge_insert(
            self.spark, self.table("quarantine"), rows, ["quarantine_id"], commit, QUARANTINE
        )

    def write_removals(self, report: StageReport, removed: DataFrame | None, commit: tables.Commit) -> None:
        """The stage's rows of removed_samples become exactly `removed` (None: the stage removes
        nothing under its policy), so no removal an earlier configuration made stays. A stage that
        removes nothing and finds no table writes none."""
        if removed is None:
            if not tables.exists(self.spark, self.table("removed_samples")):
                return
            removed = self.spark.createDataFrame([], REMOVED_SAMPLES)
        report.output_versions["removed_samples"] = tables.merge_insert(
            self.spark,
            self.table("removed_samples"),
            removed,
            ["sample_id", "stage"],
            commit,
            REMOVED_SAMPLES,
            owned_rows=f"t.stage = {tables.sql_string(report.stage)}",
        )

    @contextmanager
    def stage(self, name: str):
        """Time a stage and record its report, also when it fails."""
        report = StageReport(stage=name, started_at=datetime.now(UTC))
        if not is_connect(self.spark):  # the Spark UI's job group; Connect sessions have no SparkContext
            self.spark.sparkContext.setJobGroup(f"{self.run_id}-{name}", f"finevision {name} (run {self.run_id})")
        log.info("[%s] started", name)
        if self.tracker:
            report.mlflow_run_id = self.tracker.start_stage(name, self._stage_tags)
        try:
            yield report
            report.status = "succeeded"
        except BaseException:
            report.status = "failed"
            raise
        finally:
            report.ended_at = datetime.now(UTC)
            self.reports.append(report)
            try:
                self._record(report)
            except Exception:
                if report.status == "succeeded":
                    raise
                log.exception("[%s] could not record the failed stage in pipeline_runs/MLflow", name)
            log.info(
                "[%s] %s in %.1fs: %d in, %d out, dropped %s",
                name,
                report.status,
                report.seconds,
                report.rows_in,
                report.rows_out,
                report.dropped or "{}",
            )

    def _record(self, report: StageReport) -> None:
        row = {
            "run_id": self.run_id,
            "stage": report.stage,
            "started_at": report.started_at,
            "ended_at": report.ended_at,
            "status": report.status,
            "input_versions": report.input_versions,
            "output_versions": report.output_versions,
            "rows_in": report.rows_in,
            "rows_out": report.rows_out,
            "dropped": report.dropped,
            "counters": report.counters,
            "config_hash": self.config_hash,
            "git_revision": self.git_revision,
            "mlflow_run_id": self.mlflow_run_id,
            "package_version": self.package_version,
        }
        frame = self.spark.createDataFrame([row], PIPELINE_RUNS)
        tables.append(self.spark, self.table("pipeline_runs"), frame, self.commit(report.stage), PIPELINE_RUNS)
        if self.tracker and report.mlflow_run_id:
            prefix = report.stage
            metrics: dict[str, float] = {f"{prefix}.rows_in": report.rows_in, f"{prefix}.rows_out": report.rows_out}
            metrics.update({f"{prefix}.dropped.{reason}": n for reason, n in report.dropped.items()})
            metrics.update({f"{prefix}.{name}": n for name, n in report.counters.items()})
            metrics[f"{prefix}.seconds"] = report.seconds
            params = {f"{prefix}.input.{t}": v for t, v in report.input_versions.items()}
            params |= {f"{prefix}.output.{t}": v for t, v in report.output_versions.items()}
            self.tracker.end_stage(report.mlflow_run_id, metrics, params, failed=report.status != "succeeded")

    def close(self, failed: bool = False) -> None:
        """End the MLflow parent run (a shared one once no stage of it is still running)."""
        if self.tracker:
            self.mlflow_run_id = self.tracker.close(failed)


def _flat_params(config: BaseModel) -> dict[str, str]:
    flat: dict[str, str] = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else key, inner)
        else:
            flat[prefix] = str(value)[:500]

    walk("", config.model_dump(mode="json"))
    return flat
