"""Spark sessions per profile (`conf/profiles/<name>.yaml`).

`local` builds `local[*]` with Delta Lake: the jars come from Maven Central through Spark's own
resolver (`spark.jars.packages`) into an Ivy folder inside the project, so later runs work
offline. If `.cache/delta-jars/` holds jars (see `make delta-jars-offline`), they are used instead
of the resolver. `standalone`, `databricks` and `emr` take the session spark-submit (or the
cluster) made and never set jars.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict

from etl.config import CONF_DIR, PROJECT_ROOT, ConfigError

PROFILES_DIR = CONF_DIR / "profiles"
OFFLINE_JARS_DIR = PROJECT_ROOT / ".cache" / "delta-jars"
DELTA_EXTENSIONS = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = "local"
    master: str | None = None
    delta_jars: str = "provided"  # maven | provided
    ivy_dir: str | None = None
    conf: dict[str, str] = {}


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
    """The SparkSession for a profile. Cluster profiles return the active session."""
    from pyspark.sql import SparkSession

    if isinstance(profile, str):
        profile = load_profile(profile)
    if profile.master is None:
        builder = SparkSession.builder.appName("finevision")
        for key, value in {**profile.conf, **(extra_conf or {})}.items():
            builder = builder.config(key, value)
        return builder.getOrCreate()

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
    return session


def _with_delta_jars(builder, profile: Profile):
    offline = sorted(OFFLINE_JARS_DIR.glob("*.jar")) if OFFLINE_JARS_DIR.exists() else []
    if offline:
        return builder.config("spark.jars", ",".join(str(p) for p in offline))
    from delta import configure_spark_with_delta_pip

    if profile.ivy_dir:
        ivy = Path(profile.ivy_dir)
        builder = builder.config("spark.jars.ivy", str(ivy if ivy.is_absolute() else PROJECT_ROOT / ivy))
    return configure_spark_with_delta_pip(builder)


if __name__ == "__main__":
    # `python -m etl.session`: start the local profile once, which resolves and caches the jars.
    spark = build_session("local")
    print(f"spark {spark.version} with delta ready; jars cached under {PROJECT_ROOT / '.ivy'}")
    spark.stop()
