"""Spark SQL confs a job needs for a while: set on entry, put back as they were on exit.

    with session_conf(spark, {"spark.sql.execution.arrow.maxRecordsPerBatch": "64"}):
        ...  # the job's reads, UDFs and writes

A job that sets a conf for its UDFs and leaves it set changes every later stage of the session
(clean's 64-row Arrow batches would reach the embed and judge UDFs). Works over Spark Connect.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from pyspark.sql import SparkSession


@contextmanager
def session_conf(spark: SparkSession, values: dict[str, str]) -> Iterator[None]:
    """Set `values` in the session; restore each key's previous value (or unset it) on exit, also on error."""
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
