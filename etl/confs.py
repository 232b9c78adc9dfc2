"""Spark SQL confs a job needs for a while: set on entry, put back as they were on exit.

    with session_conf(spark, {"spark.sql.execution.arrow.maxRecordsPerBatch": "64"}):
        ...  # the job's reads, UDFs and writes

A job that sets a conf for its UDFs and leaves it set changes every later stage of the session
(clean's 64-row Arrow batches would reach the embed and judge UDFs). Works over Spark Connect.

Databricks serverless accepts only the properties it lists for serverless notebooks and jobs
(`SERVERLESS_SETTABLE`); on a serverless session (etl.session.is_serverless) any other key is
skipped with a logged note and the job runs with the platform's value (e.g. its Arrow batch size).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from pyspark.sql import SparkSession

from etl.session import is_serverless

log = logging.getLogger("finevision")

# The Spark properties Databricks documents as settable on serverless notebooks and jobs;
# tests/fixtures/databricks_serverless.yaml holds the cited list this must equal.
SERVERLESS_SETTABLE = frozenset(
    {
        "spark.databricks.execution.timeout",
        "spark.sql.legacy.timeParserPolicy",
        "spark.sql.session.timeZone",
        "spark.sql.shuffle.partitions",
        "spark.sql.ansi.enabled",
        "spark.sql.files.maxPartitionBytes",
    }
)


def settable(spark: SparkSession, values: dict[str, str], what: str = "session conf") -> dict[str, str]:
    """`values` less the keys this session refuses (on serverless: those not in SERVERLESS_SETTABLE),
    each skipped key logged once with what it was for."""
    if not is_serverless(spark):
        return dict(values)
    kept = {key: value for key, value in values.items() if key in SERVERLESS_SETTABLE}
    for key in sorted(set(values) - set(kept)):
        log.info("serverless: %s %s=%s not set (not settable on serverless)", what, key, values[key])
    return kept


@contextmanager
def session_conf(spark: SparkSession, values: dict[str, str]) -> Iterator[None]:
    """Set `values` in the session; restore each key's previous value (or unset it) on exit, also on
    error. On a serverless session keys it refuses are skipped (see `settable`)."""
    values = settable(spark, values)
    previous: dict[str, str | None] = {key: spark.conf.get(key, None) for key in values}
    for key, value in values.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, old in previous.items():
            if old is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, old)
