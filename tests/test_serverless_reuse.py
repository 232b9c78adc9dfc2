"""Stages on a session marked serverless (`--profile serverless`) reuse results through scratch
Delta tables and cut dedup's lineage through them instead of caching and checkpoints, and write
the same tables as on a classic session. (tests/test_spark_connect.py runs the whole sample
pipeline so under a guard that refuses what serverless refuses.)"""

from __future__ import annotations

from etl import tables
from etl.config import load_config

STAGES = ["ingest", "clean", "embed", "dedup"]


def _settings(corpus: dict, lakehouse) -> list[str]:
    return [
        f"lakehouse={lakehouse}",
        f"data_root={corpus['data']}",
        f"sources_dir={corpus['sources']}",
        "mlflow.enabled=false",
    ]


def test_serverless_stages_reuse_through_scratch_tables_and_write_the_classic_tables(spark, dirty_corpus, tmp_path):
    from etl import session
    from etl.jobs import STAGES_BY_NAME
    from etl.runs import PipelineRun

    runs = {}
    for kind in ("classic", "serverless"):
        config = load_config(overrides=_settings(dirty_corpus, tmp_path / kind))
        if kind == "serverless":
            session._SERVERLESS_SESSIONS.add(spark)
        try:
            run = PipelineRun(spark, config, f"test-{kind}")
            for stage in STAGES:
                STAGES_BY_NAME[stage].runner()(run)
        finally:
            session._SERVERLESS_SESSIONS.discard(spark)
        runs[kind] = run

    assert (tmp_path / "serverless" / "_scratch_ingest_parsed").is_dir()
    assert (tmp_path / "serverless" / "_scratch_dedup_components").is_dir()  # the rounds' lineage cut
    assert not list((tmp_path / "classic").glob("_scratch_*"))
    written = sorted({name for stage in STAGES for name in STAGES_BY_NAME[stage].writes})
    for name in written:
        classic_ref, serverless_ref = runs["classic"].table(name), runs["serverless"].table(name)
        assert tables.exists(spark, classic_ref) == tables.exists(spark, serverless_ref), name
        if not tables.exists(spark, classic_ref):
            continue
        classic_rows = tables.read(spark, classic_ref).drop("run_id")
        serverless_rows = tables.read(spark, serverless_ref).drop("run_id")
        assert (
            classic_rows.exceptAll(serverless_rows).isEmpty() and serverless_rows.exceptAll(classic_rows).isEmpty()
        ), name
    for classic, serverless in zip(runs["classic"].reports, runs["serverless"].reports, strict=True):
        assert (serverless.rows_in, serverless.rows_out, serverless.dropped) == (
            classic.rows_in,
            classic.rows_out,
            classic.dropped,
        ), classic.stage
