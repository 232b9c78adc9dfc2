"""The CLI as a user calls it: dry run, config errors, preview."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from etl.cli import app
from etl.config import load_config

runner = CliRunner()


def _base(tmp_path, corpus):
    return [
        "--lakehouse",
        str(tmp_path / "lake"),
        "--set",
        f"data_root={corpus['data']}",
        "--set",
        f"sources_dir={corpus['sources']}",
        "--set",
        f"mlflow.tracking_uri=sqlite:///{tmp_path}/m.db",
    ]


def test_bad_override_exits_2_with_one_line_naming_the_key(tmp_path):
    result = runner.invoke(app, ["--set", "clean.max_side=huge", "clean"])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1
    assert lines[0].startswith("error:") and "clean.max_side" in lines[0]


def test_unknown_source_is_a_clear_error(tmp_path, dirty_corpus):
    result = runner.invoke(app, [*_base(tmp_path, dirty_corpus), "preview", "--source", "nope"])
    assert result.exit_code == 2 and "unknown source ['nope']" in result.output


def test_dry_run_prints_the_plan_and_writes_nothing(spark, tmp_path, dirty_corpus):
    result = runner.invoke(app, [*_base(tmp_path, dirty_corpus), "--dry-run", "run"])
    assert result.exit_code == 0, result.output
    assert "stage ingest" in result.output and "stage clean" in result.output
    assert "3 shard(s) from 3 source(s)" in result.output
    assert "reads  bronze_samples @ version (not yet written)" in result.output
    assert not (tmp_path / "lake").exists() and not (tmp_path / "m.db").exists()


def test_preview_writes_an_html_page_with_converted_and_rejected_records(tmp_path, dirty_corpus):
    out = tmp_path / "p.html"
    result = runner.invoke(
        app, [*_base(tmp_path, dirty_corpus), "preview", "--source", "photos", "-n", "5", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    page = out.read_text()
    assert page.count('class="card"') == 4 and page.count('class="card rejected"') == 1
    assert "quarantine: missing_image" in page and "Q: Colour?" in page and "data:image/jpeg;base64," in page


PROJECT = Path(__file__).parents[1]
DOCUMENTATION = [PROJECT / "README.md", *sorted((PROJECT / "docs").glob("*.md"))]


def readme_sql_statements() -> list[str]:
    """Every SQL statement of the README and docs/: their ```sql blocks and `finevision views --query` lines."""
    text = "\n".join(page.read_text() for page in DOCUMENTATION)
    statements = []
    for block in re.findall(r"```sql\n(.*?)```", text, re.S):
        lines = [re.sub(r"\s+--\s.*$", "", line) for line in block.splitlines() if not line.lstrip().startswith("--")]
        body = "\n".join(lines)
        statements += [s.strip() for s in body.split(";") if s.strip()]
    return statements + re.findall(r'finevision views --query "(SELECT [^"]+)"', text)


@pytest.fixture
def small_lakehouse(spark, tmp_path, monkeypatch):
    """Empty tables of the real schemas at ./lakehouse (silver with four versions), as the README's
    relative paths expect; cheap, unlike the sample pipeline."""
    from etl.schema import (
        CONTAMINATION_HITS,
        DIVERSITY_METRICS,
        NEAR_DUPLICATE_CLUSTERS,
        QUARANTINE,
        SAMPLES,
        SUBSET_STATS,
        TURN_RATINGS,
    )

    monkeypatch.chdir(tmp_path)
    lake = tmp_path / "lakehouse"
    schemas = {
        "quarantine": QUARANTINE,
        "subset_stats": SUBSET_STATS,
        "diversity_metrics": DIVERSITY_METRICS,
        "contamination_hits": CONTAMINATION_HITS,
        "turn_ratings": TURN_RATINGS,
        "near_duplicate_clusters": NEAR_DUPLICATE_CLUSTERS,
        "silver_samples": SAMPLES,
    }
    for name, schema in schemas.items():
        spark.createDataFrame([], schema).write.format("delta").mode("append").save(str(lake / name))
    for version in range(1, 4):  # `VERSION AS OF 3` needs four commits
        spark.sql(f"ALTER TABLE delta.`{lake / 'silver_samples'}` SET TBLPROPERTIES ('test.version' = '{version}')")
    return load_config(overrides=[f"lakehouse={lake}", "mlflow.enabled=false"])


def test_every_sql_example_of_the_readme_runs_as_written(spark, small_lakehouse):
    from etl.views import register_views, run_query

    statements = readme_sql_statements()
    assert len(statements) >= 10 and any("delta.`lakehouse/" in s for s in statements)
    with pytest.raises(Exception, match="UNSUPPORTED_DATASOURCE_FOR_DIRECT_QUERY|not a Delta table|relative"):
        spark.sql("SELECT count(*) FROM delta.`lakehouse/quarantine`").collect()  # what Spark does with the path alone
    registered, _ = register_views(spark, small_lakehouse)
    assert "v_subset_stats" in registered
    for sql in statements:
        run_query(spark, sql).collect()


def test_a_failing_query_is_one_line_that_says_what_to_do(spark, tmp_path, capfd):
    result = runner.invoke(
        app,
        [
            "--lakehouse",
            str(tmp_path / "empty"),
            "--set",
            "mlflow.enabled=false",
            "views",
            "--query",
            "SELECT name FROM v_subset_stats",
        ],
    )
    captured = capfd.readouterr()
    everything = result.output + captured.out + captured.err
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1].startswith("error: --query: [TABLE_OR_VIEW_NOT_FOUND]")
    assert "finevision tables" in result.output
    assert "org.apache.spark" not in everything and "Traceback" not in everything


class _Stage:
    def __init__(self, done, total):
        self.numCompletedTasks, self.numTasks = done, total


class _Tracker:
    """Stands in for Spark's StatusTracker: two running stages of one job."""

    def getActiveStageIds(self):
        return [1, 2]

    def getStageInfo(self, stage_id):
        return {1: _Stage(3, 8), 2: _Stage(1, 4)}[stage_id]

    def getActiveJobsIds(self):
        return [7]


def test_progress_counts_the_running_stages_tasks_and_is_off_without_a_spark_context(monkeypatch):
    from etl import progress

    assert progress.task_counts(_Tracker()) == (4, 12, 1)

    class ConnectSession:  # Spark Connect sessions raise on any SparkContext access
        @property
        def sparkContext(self):
            raise RuntimeError("[JVM_ATTRIBUTE_NOT_SUPPORTED] sparkContext is not supported in Spark Connect")

    assert progress.status_tracker(ConnectSession()) is None
    ran = []
    with progress.spark_progress(ConnectSession(), "clean", enabled=True):
        ran.append(True)
    assert ran == [True]
    assert not progress.progress_wanted()  # under pytest


def test_relative_delta_paths_are_resolved_against_the_working_directory(tmp_path):
    from etl.views import resolve_table_paths

    sql = "SELECT * FROM delta.`lakehouse/quarantine` q JOIN delta.`/abs/t` a JOIN DELTA.`s3://b/t` s"
    expected = f"SELECT * FROM delta.`{tmp_path.resolve()}/lakehouse/quarantine` q JOIN delta.`/abs/t` a"
    assert resolve_table_paths(sql, tmp_path) == expected + " JOIN DELTA.`s3://b/t` s"


def test_demo_runs_the_steps_of_make_demo_in_order_in_one_process(monkeypatch):
    from etl import cli, demo
    from etl.train.config import load_train_config

    calls = []
    for name in ("samples", "run", "show_tables", "review", "report", "train", "evaluate"):
        monkeypatch.setattr(cli, name, lambda ctx, *args, _name=name, **kwargs: calls.append((_name, args, kwargs)))
    demo.run_demo(None)
    assert calls == [
        ("samples", (), {}),
        ("run", (), {}),
        ("show_tables", (), {}),
        ("review", ("contamination",), {}),
        ("review", ("duplicates",), {}),
        ("report", (), {}),
        ("train", (), {}),
        ("evaluate", (), {"model": "models/tiny/final"}),
    ]
    assert demo.TINY_MODEL == f"{load_train_config('tiny').output_dir}/final"  # where `train` puts the model


def test_commands_given_one_parent_run_key_record_under_one_mlflow_parent(spark, tmp_path, dirty_corpus):
    """As the bundle's tasks call it: the stage, then the options, `--parent-run` among them (the
    entry point puts global options first); two commands, one key, one MLflow parent run."""
    from mlflow import MlflowClient

    from etl.launch import global_options_first

    base = [*_base(tmp_path, dirty_corpus), "--set", "mlflow.experiment=bundle"]
    for stage in ("ingest", "clean"):
        result = runner.invoke(app, global_options_first([stage, *base, "--parent-run", "550315892394120"]))
        assert result.exit_code == 0, result.output
    client = MlflowClient(f"sqlite:///{tmp_path}/m.db")
    runs = client.search_runs([client.get_experiment_by_name("bundle").experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parent.data.tags["finevision.parent_key"] == "550315892394120" and parent.info.status == "FINISHED"
    stages = {r.info.run_name: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert set(stages) == {"ingest", "clean"} and stages["ingest"].data.metrics["ingest.rows_in"] == 12
    assert f"mlflow run {parent.info.run_id}" in result.output  # what the command prints: the pipeline run
