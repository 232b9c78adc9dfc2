"""Makes a Spark Connect client refuse what Databricks serverless refuses, for a process started
with this folder on PYTHONPATH (tests/test_spark_connect.py runs the CLI so): DataFrame caching
and checkpoints, catalog caching and CACHE/UNCACHE/PERSIST TABLE statements, and setting any Spark
property outside the list Databricks documents (tests/fixtures/databricks_serverless.yaml, cited
there). ANSI mode is the server's (the test's server runs with spark.sql.ansi.enabled=true).

Python imports `sitecustomize` at start-up, before the CLI; the patches replace the methods on
pyspark's Connect classes, so every session of the process is guarded."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "databricks_serverless.yaml"
FACTS = yaml.safe_load(FIXTURE.read_text())
SETTABLE = frozenset(FACTS["settable_properties"])


class ServerlessRefusal(RuntimeError):
    """What Databricks serverless would refuse."""


def _refuse(what: str):
    def refused(*args, **kwargs):
        raise ServerlessRefusal(f"serverless guard: {what} is not supported on Databricks serverless")

    return refused


def _checked_conf(original, name: str):
    def method(self, key, *args, **kwargs):
        if key not in SETTABLE:
            raise ServerlessRefusal(f"serverless guard: spark.conf.{name}({key!r}) sets a property serverless refuses")
        return original(self, key, *args, **kwargs)

    return method


def _checked_set_all(original):
    """The session builder's confs (`builder.config`, `appName`) are sent with `silent`: a server
    ignores those it refuses, so the guard drops them; a set that is not silent must be allowed."""

    def _set_all(self, configs, silent):
        refused = sorted(key for key in configs if key not in SETTABLE)
        if refused and not silent:
            raise ServerlessRefusal(
                f"serverless guard: spark.conf._set_all({refused}) sets properties serverless refuses"
            )
        return original(self, {k: v for k, v in configs.items() if k in SETTABLE}, silent)

    return _set_all


def _checked_sql(original):
    def sql(self, query, *args, **kwargs):
        words = query.lstrip().upper().split()
        if words[:1] in (["CACHE"], ["UNCACHE"]) or words[:2] == ["PERSIST", "TABLE"]:
            raise ServerlessRefusal(
                f"serverless guard: {' '.join(words[:2])} is not supported on Databricks serverless"
            )
        if words[:1] == ["SET"] and len(words) > 1:
            key = query.lstrip()[3:].split("=", 1)[0].strip()
            if key not in SETTABLE:
                raise ServerlessRefusal(f"serverless guard: SET {key} sets a property serverless refuses")
        return original(self, query, *args, **kwargs)

    return sql


def install() -> None:
    from pyspark.sql.connect.catalog import Catalog
    from pyspark.sql.connect.conf import RuntimeConf
    from pyspark.sql.connect.dataframe import DataFrame
    from pyspark.sql.connect.session import SparkSession

    for name in ("cache", "persist", "unpersist"):
        setattr(DataFrame, name, _refuse(f"DataFrame.{name}()"))
    for name in ("checkpoint", "localCheckpoint"):
        setattr(DataFrame, name, _refuse(f"DataFrame.{name}()"))
    for name in ("cacheTable", "uncacheTable", "clearCache"):
        setattr(Catalog, name, _refuse(f"spark.catalog.{name}()"))
    for name in ("set", "unset"):
        setattr(RuntimeConf, name, _checked_conf(getattr(RuntimeConf, name), name))
    RuntimeConf._set_all = _checked_set_all(RuntimeConf._set_all)  # type: ignore[method-assign]
    SparkSession.sql = _checked_sql(SparkSession.sql)  # type: ignore[method-assign]
    print("serverless guard: installed", file=sys.stderr)


install()
