"""Serverless-safe reuse (etl/reuse.py), confs (etl/confs.py) and commit metadata (etl/tables.py)
on the shared classic session, marked serverless for the test: what each does where Databricks
serverless refuses caching, checkpoints and confs off its list. The whole pipeline under a guard
that refuses them for real runs in tests/test_spark_connect.py."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml
from pyspark.sql import functions as F

from etl import tables
from etl.confs import SERVERLESS_SETTABLE, session_conf
from etl.reuse import Scratch, pinned, reused
from etl.session import _SERVERLESS_MARK, is_serverless, load_profile, mark_serverless
from etl.stages.components import connected_components

FACTS = yaml.safe_load((Path(__file__).parent / "fixtures" / "databricks_serverless.yaml").read_text())
ARROW_ROWS = "spark.sql.execution.arrow.maxRecordsPerBatch"


@pytest.fixture
def serverless(spark):
    """The shared session, marked serverless for one test."""
    mark_serverless(spark)
    try:
        yield spark
    finally:
        delattr(spark, _SERVERLESS_MARK)


def test_the_settable_properties_are_the_documented_ones():
    assert SERVERLESS_SETTABLE == set(FACTS["settable_properties"])
    profile = load_profile("serverless")
    assert profile.serverless and profile.master is None
    assert set(profile.conf) <= SERVERLESS_SETTABLE


def test_session_conf_on_serverless_sets_only_listed_keys(serverless, caplog):
    serverless.conf.unset(ARROW_ROWS)
    with caplog.at_level(logging.INFO, logger="finevision"):
        with session_conf(serverless, {ARROW_ROWS: "7", "spark.sql.files.maxPartitionBytes": "64m"}):
            assert serverless.conf.get(ARROW_ROWS, None) is None  # skipped: not settable on serverless
            assert serverless.conf.get("spark.sql.files.maxPartitionBytes") == "64m"
    assert f"{ARROW_ROWS}=7 not set" in caplog.text


def test_reused_caches_on_classic_and_reads_a_scratch_table_on_serverless(spark, make_config, tmp_path):
    config = make_config()
    frame = spark.range(20).withColumn("half", F.col("id") / 2)
    with Scratch(spark, config) as scratch, reused(frame, scratch) as kept:
        assert kept.is_cached and not scratch.refs  # classic: persisted, no scratch table
    assert not kept.is_cached

    mark_serverless(spark)
    try:
        with Scratch(spark, config) as scratch, reused(frame, scratch) as kept:
            assert not kept.is_cached and len(scratch.refs) == 1
            folder = Path(scratch.refs[0].location)
            assert folder.parent == Path(config.lakehouse).resolve() / "_scratch"
            assert all(f.startswith(folder.as_uri()) or folder.as_posix() in f for f in kept.inputFiles())
            assert sorted(kept.collect()) == sorted(frame.collect())
        assert not folder.exists()  # dropped with the block
        with reused(frame) as recomputed:  # no scratch: the frame itself, recomputed by each action
            assert recomputed is frame and not recomputed.is_cached
        assert pinned(frame) is frame
    finally:
        delattr(spark, _SERVERLESS_MARK)
    assert not is_serverless(spark)


def test_connected_components_through_scratch_tables_equal_the_checkpointed_ones(serverless, make_config):
    edges = serverless.createDataFrame(
        [("b", "a"), ("c", "b"), ("d", "c"), ("x", "y"), ("q", "q")],  # a chain, a pair, a self loop
        "src string, dst string",
    )
    with Scratch(serverless, make_config()) as scratch:
        rows = connected_components(edges, cut=scratch.keep).collect()
        assert len(scratch.refs) >= 2  # the neighbourhoods and at least one round
    assert sorted((r["node"], r["component"]) for r in rows) == [
        ("a", "a"),
        ("b", "a"),
        ("c", "a"),
        ("d", "a"),
        ("q", "q"),
        ("x", "x"),
        ("y", "x"),
    ]


def test_merge_on_serverless_sets_no_session_conf_and_returns_its_version(serverless, make_config):
    config = make_config()
    ref = tables.TableRef.of(config, "reuse_merge")
    rows = serverless.createDataFrame([("a", 1), ("b", 2)], "k string, v long")
    commit = tables.Commit("run-1", "test", "-", "-")
    version = tables.merge_insert(serverless, ref, rows, ["k"], commit, rows.schema)
    assert serverless.conf.get(tables.USER_METADATA_CONF, None) is None
    history = serverless.sql(f"DESCRIBE HISTORY {ref.sql}").orderBy(F.desc("version")).first()
    assert history["operation"] == "MERGE" and history["version"] == version
    assert history["userMetadata"] is None  # serverless: the conf is off its list, so none is set
    more = serverless.createDataFrame([("c", 3)], "k string, v long")
    appended = tables.append(serverless, ref, more, commit, rows.schema)
    written = serverless.sql(f"DESCRIBE HISTORY {ref.sql}").filter(F.col("version") == appended).first()
    assert '"run_id": "run-1"' in written["userMetadata"]  # a write carries it as an option
