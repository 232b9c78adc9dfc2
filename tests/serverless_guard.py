"""Databricks serverless, as its documentation describes it, laid over the Spark Connect client: a
guard that raises exactly where serverless compute refuses, so a run over a local Spark Connect
server shows whether the pipeline would survive serverless.

Documented facts (read 2026-12-07; sources as named):
- https://docs.databricks.com/aws/en/compute/serverless/limitations ("Language and API support"):
  only Spark Connect APIs, no RDD or SparkContext; ANSI mode is on by default; the session time zone
  is Etc/UTC and is set through spark.sql.session.timeZone, one of the properties serverless takes.
  The page's caching section: the DataFrame and SQL caching APIs (`df.cache()`, `df.persist()`,
  `df.unpersist()`, `spark.catalog.cacheTable`, `CACHE TABLE`, `UNCACHE TABLE`, `CLEAR CACHE`) are
  not supported; a call fails with `[NOT_SUPPORTED_WITH_SERVERLESS] PERSIST TABLE is not supported
  on serverless compute.`
- https://docs.databricks.com/aws/en/spark/conf, "Configure Spark properties for serverless
  notebooks and jobs": serverless lets a notebook or job set only the properties in
  `SERVERLESS_SPARK_PROPERTIES`; setting any other fails with `[CONFIG_NOT_AVAILABLE]`. (The list
  is as that page gave it when last read; the search excerpts of it available to this session cut
  before its table, so it is written from the page as remembered, not re-read.)
- Checkpoints (`checkpoint`, `localCheckpoint`) keep blocks in the executors' block manager, the
  storage caching uses; serverless refuses them as it refuses caching (issue 27, DESIGN.md
  "Scale and clusters" rule 10).

    python tests/serverless_guard.py run <finevision arguments>   # the CLI under the guard
    python tests/serverless_guard.py self-check                   # prints what the guard refuses (JSON)
"""

from __future__ import annotations

import json
import re
import sys

SERVERLESS_SPARK_PROPERTIES = frozenset(
    {
        "spark.databricks.execution.timeout",
        "spark.sql.legacy.timeParserPolicy",
        "spark.sql.session.timeZone",
        "spark.sql.shuffle.partitions",
        "spark.sql.ansi.enabled",
        "spark.sql.files.maxPartitionBytes",
    }
)
# Set by the Connect client itself when it opens a session (not by user code): the app name.
CLIENT_OWN_PROPERTIES = frozenset({"spark.app.name", "spark.remote"})
PERSIST_REFUSED = "[NOT_SUPPORTED_WITH_SERVERLESS] PERSIST TABLE is not supported on serverless compute."
SQL_SET = re.compile(r"^\s*SET\s+([\w.]+)\s*=", re.IGNORECASE)
SQL_CACHE = re.compile(r"^\s*(CACHE|UNCACHE|CLEAR\s+CACHE)\b", re.IGNORECASE)


class ServerlessRefusal(Exception):
    """What serverless compute raises where this guard raises."""


def _refuse_persist(*_args, **_kwargs):
    raise ServerlessRefusal(PERSIST_REFUSED)


def _check_property(key: str) -> None:
    if key not in SERVERLESS_SPARK_PROPERTIES | CLIENT_OWN_PROPERTIES:
        raise ServerlessRefusal(f"[CONFIG_NOT_AVAILABLE] Configuration {key} is not available.")


def install() -> None:
    """Patch the Spark Connect client so that every call serverless refuses raises."""
    from pyspark.sql.connect.catalog import Catalog
    from pyspark.sql.connect.conf import RuntimeConf
    from pyspark.sql.connect.dataframe import DataFrame
    from pyspark.sql.connect.session import SparkSession

    for name in ("persist", "cache", "unpersist", "checkpoint", "localCheckpoint"):
        setattr(DataFrame, name, _refuse_persist)
    for name in ("cacheTable", "uncacheTable", "clearCache"):
        setattr(Catalog, name, _refuse_persist)

    conf_set, conf_unset, sql = RuntimeConf.set, RuntimeConf.unset, SparkSession.sql

    def guarded_set(self, key: str, value) -> None:
        _check_property(key)
        conf_set(self, key, value)

    def guarded_unset(self, key: str) -> None:
        _check_property(key)
        conf_unset(self, key)

    def guarded_sql(self, query: str, *args, **kwargs):
        if SQL_CACHE.match(query):
            _refuse_persist()
        if found := SQL_SET.match(query):
            _check_property(found.group(1))
        return sql(self, query, *args, **kwargs)

    RuntimeConf.set, RuntimeConf.unset, SparkSession.sql = guarded_set, guarded_unset, guarded_sql  # type: ignore[method-assign]


def require_ansi(remote: str) -> None:
    """Serverless runs with ANSI on: the server under the guard must too."""
    from pyspark.sql import SparkSession

    spark = SparkSession.builder.remote(remote).getOrCreate()
    if spark.conf.get("spark.sql.ansi.enabled") != "true":
        raise ServerlessRefusal("the Spark Connect server runs with ANSI off; serverless runs with it on")


def self_check(remote: str) -> dict[str, str]:
    """Each call the pipeline used to make, and what the guard answers ("refused" or "allowed")."""
    from pyspark.sql import SparkSession

    spark = SparkSession.builder.remote(remote).getOrCreate()
    frame = spark.range(3)
    calls = {
        "persist": lambda: frame.persist(),
        "cache": lambda: frame.cache(),
        "localCheckpoint": lambda: frame.localCheckpoint(),
        "checkpoint": lambda: frame.checkpoint(),
        "set arrow batch": lambda: spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "64"),
        "set commit metadata": lambda: spark.conf.set("spark.databricks.delta.commitInfo.userMetadata", "x"),
        "SQL SET": lambda: spark.sql("SET spark.sql.execution.arrow.maxBytesPerBatch=1024"),
        "CACHE TABLE": lambda: spark.sql("CACHE TABLE t"),
        "set shuffle partitions": lambda: spark.conf.set("spark.sql.shuffle.partitions", "2"),
        "count": lambda: frame.count(),
    }
    answers = {}
    for name, call in calls.items():
        try:
            call()
            answers[name] = "allowed"
        except ServerlessRefusal:
            answers[name] = "refused"
    return answers


if __name__ == "__main__":
    import os

    remote = os.environ["SPARK_REMOTE"]
    install()
    require_ansi(remote)
    if sys.argv[1] == "self-check":
        print(json.dumps(self_check(remote)))
    else:
        from etl.launch import main

        main(sys.argv[2:])
