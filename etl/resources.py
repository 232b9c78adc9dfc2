"""Stage-level scheduling: what one stage's tasks ask of the cluster (GPUs, cores).

A GPU stage (embed; rate when it lands) should hold one GPU per task while the CPU stages of the
same application use every core. Spark 4 does this per stage: `mapInPandas(..., profile=...)`
runs that stage's tasks under a `ResourceProfile`. The requests live in Spark confs, so a profile
(`conf/profiles/*.yaml`), a `spark-submit --conf`, or a Databricks cluster's `spark_conf` can set
them without touching code:

    spark.finevision.stage.<stage>.task.gpus      GPUs per task (0.5 shares a GPU by two tasks)
    spark.finevision.stage.<stage>.task.cpus      cores per task (also the model's thread count)
    spark.finevision.stage.<stage>.executor.cores cores of executors started for the stage  } dynamic
    spark.finevision.stage.<stage>.executor.gpus  GPUs of executors started for the stage   } allocation only

GPUs are asked for only where executors have them (`spark.executor.resource.gpu.amount` > 0):
the same profile then runs the stage on CPU on a CPU cluster instead of waiting forever for a GPU.
Spark supports stage-level scheduling on standalone, YARN and Kubernetes masters; under `local[*]`
(and any other master) `stage_resource_profile` returns None and the stage runs as usual.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pyspark.sql import SparkSession

from etl.config import ConfigError
from etl.session import is_connect

log = logging.getLogger("finevision")

PREFIX = "spark.finevision.stage"
SUPPORTED_MASTERS = ("spark://", "yarn", "k8s://", "local-cluster")


@dataclass(frozen=True)
class StageResources:
    """One stage's requests, as read from the Spark confs (None = not asked for)."""

    task_cpus: int | None = None
    task_gpus: float | None = None
    executor_cores: int | None = None
    executor_gpus: int | None = None

    def is_empty(self) -> bool:
        return all(value is None for value in (self.task_cpus, self.task_gpus, self.executor_cores, self.executor_gpus))


def stage_resources(spark: SparkSession, stage: str) -> StageResources:
    """The requests configured for `stage`; a malformed value is a ConfigError naming the key."""

    def number(key: str, kind: type):
        raw = spark.conf.get(f"{PREFIX}.{stage}.{key}", None)
        if raw is None or raw == "":
            return None
        try:
            value = kind(raw)
        except ValueError:
            raise ConfigError(f"{PREFIX}.{stage}.{key}: expected a {kind.__name__}, got {raw!r}") from None
        if value <= 0:
            raise ConfigError(f"{PREFIX}.{stage}.{key}: must be > 0, got {raw!r}")
        return value

    return StageResources(
        number("task.cpus", int),
        number("task.gpus", float),
        number("executor.cores", int),
        number("executor.gpus", int),
    )


def executor_gpus(spark: SparkSession) -> float:
    """GPUs per executor of the application (0 on a CPU cluster)."""
    return float(spark.conf.get("spark.executor.resource.gpu.amount", "0") or 0)


def default_parallelism(spark: SparkSession) -> int:
    """Tasks that keep every core busy: the SparkContext's default parallelism on classic sessions;
    over Spark Connect (no SparkContext) `spark.default.parallelism`, else `spark.sql.shuffle.partitions`."""
    if not is_connect(spark):
        return spark.sparkContext.defaultParallelism
    configured = spark.conf.get("spark.default.parallelism", None) or spark.conf.get("spark.sql.shuffle.partitions")
    return int(configured or 1)


@dataclass(frozen=True)
class Requests:
    """What a stage's ResourceProfile asks for: per task, and of executors started for it."""

    task: dict[str, float]
    executor: dict[str, float]


def stage_requests(
    wanted: StageResources, master: str, executor_gpus: float, dynamic: bool, default_task_cpus: int
) -> Requests | None:
    """The requests a stage's profile carries on this cluster, or None where Spark cannot
    schedule per stage (plain function, so the rules are tested without a cluster)."""
    if wanted.is_empty() or not master.startswith(SUPPORTED_MASTERS):
        return None
    # GPUs exist if the application's executors have them, or if the stage starts GPU executors.
    has_gpus = executor_gpus > 0 or bool(dynamic and wanted.executor_gpus)
    task: dict[str, float] = {"cpus": wanted.task_cpus or default_task_cpus}
    if wanted.task_gpus and has_gpus:
        task["gpu"] = wanted.task_gpus
    executor: dict[str, float] = {}
    if dynamic:  # without dynamic allocation Spark reuses the default executors (task requests only)
        executor = {k: v for k, v in (("cores", wanted.executor_cores), ("gpu", wanted.executor_gpus)) if v}
    return Requests(task, executor)


def stage_resource_profile(spark: SparkSession, stage: str):
    """The `ResourceProfile` for a stage's tasks, or None when nothing is asked for or the master
    cannot schedule per stage. Pass it as `mapInPandas(..., profile=...)` / `mapInArrow`."""
    from pyspark.resource import ExecutorResourceRequests, ResourceProfileBuilder, TaskResourceRequests

    wanted = stage_resources(spark, stage)
    conf = spark.conf  # spark.conf, not the SparkContext's: the same values, and it works over Spark Connect
    master = conf.get("spark.master", "") or ""
    requests = stage_requests(
        wanted,
        master,
        executor_gpus(spark),
        (conf.get("spark.dynamicAllocation.enabled", "false") or "false").lower() == "true",
        int(conf.get("spark.task.cpus", "1") or "1"),
    )
    if requests is None:
        if not wanted.is_empty():
            log.info("stage %s: master %s cannot schedule per stage; default resources", stage, master)
        return None
    if wanted.task_gpus and "gpu" not in requests.task:
        log.warning(
            "stage %s asks for %s GPU(s) per task but executors have none: running on CPU", stage, wanted.task_gpus
        )
    task = TaskResourceRequests().cpus(int(requests.task["cpus"]))
    if "gpu" in requests.task:
        task = task.resource("gpu", requests.task["gpu"])
    builder = ResourceProfileBuilder().require(task)
    if requests.executor:
        executors = ExecutorResourceRequests()
        if "cores" in requests.executor:
            executors = executors.cores(int(requests.executor["cores"]))
        if "gpu" in requests.executor:
            script = conf.get("spark.executor.resource.gpu.discoveryScript", "") or ""
            executors = executors.resource("gpu", int(requests.executor["gpu"]), script)
        builder = builder.require(executors)
    profile = builder.build
    log.info("stage %s runs under resource profile %s: %s", stage, profile.id, requests)
    return profile


def task_cpus(spark: SparkSession, profile) -> int:
    """Cores per task: the stage's ResourceProfile's, else the session's `spark.task.cpus`."""
    if profile is not None and "cpus" in profile.taskResources:
        return int(profile.taskResources["cpus"].amount)
    return int(spark.conf.get("spark.task.cpus", "1") or "1")
