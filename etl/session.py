"""Spark sessions per profile (`conf/profiles/<name>.yaml`).

`local` builds `local[*]` with Delta Lake: the jars come from Maven Central through Spark's own
resolver (`spark.jars.packages`) into an Ivy folder inside the project, so later runs work
offline; once resolved, later sessions put the recorded jars on `spark.jars` directly (no Ivy
resolution report on every command). If `.cache/delta-jars/` holds jars (see `make delta-jars-offline`), they are used instead
of the resolver. `standalone`, `databricks` and `emr` take the session spark-submit (or the
cluster) made and never set jars. `connect` talks to a Spark Connect server (`remote`, or the
`SPARK_REMOTE` environment variable): the server owns Spark, Delta and the jars.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict

from etl.config import CONF_DIR, PROJECT_ROOT, ConfigError

PROFILES_DIR = CONF_DIR / "profiles"
OFFLINE_JARS_DIR = PROJECT_ROOT / ".cache" / "delta-jars"
RESOLVED_JARS = "resolved-jars.txt"  # in the Ivy folder: the packages, then the jars they resolved to
DELTA_EXTENSIONS = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = "local"
    master: str | None = None
    remote: str | None = None  # a Spark Connect URL, sc://host:port/;token=...
    delta_jars: str = "provided"  # maven | provided
    ivy_dir: str | None = None
    conf: dict[str, str] = {}
    serverless: bool = False  # Databricks serverless: no caching, no checkpoints, only its listed confs


_SERVERLESS_MARK = "_finevision_serverless"


def load_profile(name: str) -> Profile:
    """A profile by name (`conf/profiles/<name>.yaml`, packaged in the wheel) or a YAML file's path."""
    path = Path(name) if name.endswith((".yaml", ".yml")) else PROFILES_DIR / f"{name}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))
        raise ConfigError(f"--profile {name!r}: no such profile; known: {known}")
    data = yaml.safe_load(path.read_text()) or {}
    data["conf"] = {k: str(v) for k, v in (data.get("conf") or {}).items()}
    return Profile(name=path.stem, **data)


def build_session(profile: Profile | str = "local", extra_conf: dict[str, str] | None = None):
    """The SparkSession for a profile. Cluster profiles return the active session; `remote` ones
    a Spark Connect session to that server."""
    from pyspark.sql import SparkSession

    if isinstance(profile, str):
        profile = load_profile(profile)
    if profile.master is None:
        builder = SparkSession.builder.appName("finevision")
        if profile.remote is not None:
            builder = builder.remote(os.environ.get("SPARK_REMOTE") or profile.remote)
        confs = {**profile.conf, **(extra_conf or {})}
        if profile.serverless:  # only the properties serverless lists; the others are skipped, logged
            from etl.confs import SERVERLESS_SETTABLE

            for key in sorted(set(confs) - SERVERLESS_SETTABLE):
                logging.getLogger("finevision").info("serverless: %s not set (not settable on serverless)", key)
            confs = {key: value for key, value in confs.items() if key in SERVERLESS_SETTABLE}
        for key, value in confs.items():
            builder = builder.config(key, value)
        session = builder.getOrCreate()
        if profile.serverless:
            mark_serverless(session)
        quiet_error_logs()
        return session

    # Workers must run the interpreter that has our dependencies, not whatever python3 is on PATH.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder.master(profile.master).appName("finevision")
    for key, value in {**DELTA_EXTENSIONS, **profile.conf, **(extra_conf or {})}.items():
        builder = builder.config(key, value)
    if profile.delta_jars == "maven":
        builder = _with_delta_jars(builder, profile)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    quiet_error_logs()
    if profile.delta_jars == "maven":
        _record_resolved_jars(session)
    return session


def mark_serverless(spark) -> None:
    """Record that `spark` runs where caching, checkpoints and most confs are refused (etl/reuse.py,
    etl/confs.py and etl/tables.py read the mark through `is_serverless`)."""
    setattr(spark, _SERVERLESS_MARK, True)


def is_serverless(spark) -> bool:
    """Whether `spark` was built from a serverless profile (`serverless: true`)."""
    return bool(getattr(spark, _SERVERLESS_MARK, False))


def is_connect(spark) -> bool:
    """Whether `spark` is a Spark Connect session: no SparkContext, no JVM on this side."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


def quiet_error_logs() -> None:
    """PySpark logs every SQL and DataFrame error with its JVM stack trace, as JSON, before raising
    it; the CLI reports the error in one line, so those logs only show under --verbose."""
    import logging

    from pyspark.logger import PySparkLogger

    if logging.getLogger("finevision").isEnabledFor(logging.DEBUG):
        return
    for name in ("SQLQueryContextLogger", "DataFrameQueryContextLogger"):
        PySparkLogger.getLogger(name).setLevel(logging.CRITICAL)


def _with_delta_jars(builder, profile: Profile):
    offline = sorted(OFFLINE_JARS_DIR.glob("*.jar")) if OFFLINE_JARS_DIR.exists() else []
    if offline:
        return builder.config("spark.jars", ",".join(str(p) for p in offline))
    from delta import configure_spark_with_delta_pip

    builder = configure_spark_with_delta_pip(builder)
    ivy = ivy_path(profile)
    if ivy is None:
        return builder
    cached = _resolved_jars(ivy, builder._options.get("spark.jars.packages", ""))
    if cached:  # resolved before: put the jars on the classpath, without Ivy's report on every start
        builder._options.pop("spark.jars.packages", None)
        return builder.config("spark.jars", ",".join(cached))
    return builder.config("spark.jars.ivy", str(ivy))


def ivy_path(profile: Profile) -> Path | None:
    """The profile's Ivy folder (`~` expanded; a relative path is taken from the checkout)."""
    if not profile.ivy_dir:
        return None
    ivy = Path(profile.ivy_dir).expanduser()
    return ivy if ivy.is_absolute() else PROJECT_ROOT / ivy


def cached_delta_jars(profile: Profile) -> list[str] | None:
    """The Delta jars an earlier session of this profile resolved, if they are all still there."""
    from delta import configure_spark_with_delta_pip
    from pyspark.sql import SparkSession

    ivy = ivy_path(profile)
    packages = configure_spark_with_delta_pip(SparkSession.builder)._options.get("spark.jars.packages", "")
    return _resolved_jars(ivy, packages) if ivy else None


def _resolved_jars(ivy: Path, packages: str) -> list[str] | None:
    """The jars an earlier session resolved for exactly these packages, if they are all still there."""
    record = ivy / RESOLVED_JARS
    if not packages or not record.exists():
        return None
    lines = record.read_text().split()
    jars = lines[1:]
    return jars if lines[:1] == [packages] and jars and all(Path(j).is_file() for j in jars) else None


def _record_resolved_jars(session) -> None:
    """After Spark resolved the Delta packages, note which jars they are (see `_resolved_jars`)."""
    conf = session.sparkContext.getConf()
    packages, jars = conf.get("spark.jars.packages", ""), conf.get("spark.jars", "")
    ivy = conf.get("spark.jars.ivy", "")
    if packages and jars and ivy:
        paths = [j.removeprefix("file://").removeprefix("file:") for j in jars.split(",") if j]
        (Path(ivy) / RESOLVED_JARS).write_text("\n".join([packages, *paths]) + "\n")


if __name__ == "__main__":
    # `python -m etl.session` (`make jars`): start the local profile once, which resolves the Delta
    # jars into the profile's Ivy folder, shared by every clone of this user; no JVM once they are there.
    local = load_profile("local")
    if cached_delta_jars(local):
        print(f"delta jars cached under {ivy_path(local)}")
    else:
        spark = build_session(local)
        print(f"spark {spark.version} with delta ready; jars cached under {ivy_path(local)}")
        spark.stop()
