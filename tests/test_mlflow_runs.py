"""One pipeline run, one MLflow record (etl/tracking.py), on a real MLflow SQLite store: a parent
run with a nested run per stage, locally and where the stages run as separate invocations that
share a parent by key (Databricks job tasks, EMR steps), also when they race to create it."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient
from mlflow.entities import ViewType

from etl.build_info import build_info
from etl.runs import PipelineRun
from etl.tracking import PARENT_KEY_TAG, Tracker

FACTS = yaml.safe_load((Path(__file__).parent / "fixtures" / "pipeline_run_keys.yaml").read_text())
PARENT_TAG = FACTS["mlflow"]["parent_run_tag"]


@pytest.fixture
def config(make_config):
    return make_config(**{"mlflow__experiment": "nesting"})


def _client(config) -> MlflowClient:
    return MlflowClient(config.mlflow.tracking_uri)


def _runs(config, view=ViewType.ACTIVE_ONLY):
    client = _client(config)
    (experiment,) = [e for e in client.search_experiments() if e.name == config.mlflow.experiment]
    return client.search_runs([experiment.experiment_id], run_view_type=view)


def _children(config, parent_id: str) -> dict[str, list]:
    """The runs nested under `parent_id`, by run name (the stage)."""
    children: dict[str, list] = {}
    for run in _runs(config):
        if run.data.tags.get(PARENT_TAG) == parent_id:
            children.setdefault(run.info.run_name, []).append(run)
    return children


def _stage(run: PipelineRun, name: str, rows: int, fail: bool = False) -> None:
    """A stage that counts `rows` in, drops one of them and, with `fail`, fails after counting."""
    with run.stage(name) as report:
        report.count_outcomes({None: rows - 1, "too_small": 1})
        report.output_versions["silver_samples"] = 3
        if fail:
            raise RuntimeError("the stage broke")


def test_a_local_run_is_one_parent_with_a_nested_run_per_stage(spark, config):
    run = PipelineRun(spark, config, "run")
    _stage(run, "ingest", 12)
    _stage(run, "clean", 11)
    run.close()

    parents = [r for r in _runs(config) if PARENT_TAG not in r.data.tags]
    assert [p.info.run_id for p in parents] == [run.mlflow_run_id]
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    # run-level: configuration and build on the parent, and no stage metrics there
    assert parent.data.params["config_hash"] == config.config_hash()
    assert parent.data.tags["mlflow.source.git.commit"] == build_info().commit
    assert parent.data.tags["finevision.version"] == build_info().version
    assert parent.data.tags["finevision.run_id"] == run.run_id
    assert not parent.data.metrics
    children = _children(config, run.mlflow_run_id)
    assert set(children) == {"ingest", "clean"}
    (ingest,), (clean,) = children["ingest"], children["clean"]
    assert ingest.data.metrics["ingest.rows_in"] == 12 and ingest.data.metrics["ingest.dropped.too_small"] == 1
    assert clean.data.metrics["clean.rows_in"] == 11 and clean.data.metrics["clean.rows_out"] == 10
    assert "clean.rows_in" not in ingest.data.metrics  # each stage's numbers on its own run
    assert clean.data.params["clean.output.silver_samples"] == "3"
    assert {ingest.info.status, clean.info.status} == {"FINISHED"}
    assert {r.mlflow_run_id for r in run.reports} == {ingest.info.run_id, clean.info.run_id}


def test_a_failed_stage_fails_its_run_and_the_parent(spark, config):
    run = PipelineRun(spark, config, "run")
    _stage(run, "ingest", 5)
    with pytest.raises(RuntimeError):
        _stage(run, "clean", 4, fail=True)
    run.close(failed=True)
    parent = _client(config).get_run(run.mlflow_run_id)
    children = _children(config, run.mlflow_run_id)
    assert parent.info.status == "FAILED"
    assert children["ingest"][0].info.status == "FINISHED" and children["clean"][0].info.status == "FAILED"
    assert children["clean"][0].data.metrics["clean.rows_in"] == 4  # what it counted before failing


def test_invocations_given_one_key_share_one_parent(spark, config):
    """As a bundle's tasks run: one invocation per stage, one after another, the same key."""
    first = PipelineRun(spark, config, "ingest", parent_key="1234")
    _stage(first, "ingest", 12)
    first.close()
    assert _client(config).get_run(first.mlflow_run_id).info.status == "FINISHED"
    second = PipelineRun(spark, config, "clean", parent_key="1234")
    assert _client(config).get_run(second.mlflow_run_id).info.status == "RUNNING"  # running again
    _stage(second, "clean", 11)
    second.close()
    other = PipelineRun(spark, config, "ingest", parent_key="5678")  # another pipeline run
    _stage(other, "ingest", 3)
    other.close()

    assert first.mlflow_run_id == second.mlflow_run_id != other.mlflow_run_id
    parent = _client(config).get_run(first.mlflow_run_id)
    assert parent.data.tags[PARENT_KEY_TAG] == "1234" and parent.info.status == "FINISHED"
    assert parent.data.params["config_hash"] == config.config_hash()
    children = _children(config, first.mlflow_run_id)
    assert set(children) == {"ingest", "clean"}
    # each invocation's own run id and command on its stage run
    assert children["clean"][0].data.tags["finevision.run_id"] == second.run_id
    assert children["clean"][0].data.tags["command"] == "clean"
    assert set(_children(config, other.mlflow_run_id)) == {"ingest"}


def test_the_parent_stays_running_while_a_parallel_task_runs_and_a_retry_replaces_a_failure(spark, config):
    """decontaminate and dedup run at once: the first to end leaves the parent running; a retried
    task's new run replaces its failed one in the parent's status."""
    decontaminate = PipelineRun(spark, config, "decontaminate", parent_key="77")
    dedup = PipelineRun(spark, config, "dedup", parent_key="77")
    with dedup.stage("dedup"):
        _stage(decontaminate, "decontaminate", 4)
        decontaminate.close()
        assert _client(config).get_run(decontaminate.mlflow_run_id).info.status == "RUNNING"
    dedup.close()
    assert _client(config).get_run(dedup.mlflow_run_id).info.status == "FINISHED"

    export = PipelineRun(spark, config, "export", parent_key="77")
    with pytest.raises(RuntimeError):
        _stage(export, "export", 2, fail=True)
    export.close(failed=True)
    assert _client(config).get_run(export.mlflow_run_id).info.status == "FAILED"
    retry = PipelineRun(spark, config, "export", parent_key="77")
    _stage(retry, "export", 2)
    retry.close()
    assert _client(config).get_run(retry.mlflow_run_id).info.status == "FINISHED"
    assert len(_children(config, retry.mlflow_run_id)["export"]) == 2


def test_racing_invocations_end_under_one_parent(spark, config):
    """Two invocations with one key start at once on threads (each may find no parent and create
    one): after both ran a stage and closed, one parent is left, with both stage runs under it."""
    barrier = threading.Barrier(2)
    runs: dict[str, PipelineRun] = {}
    errors: list[BaseException] = []

    def start(command: str) -> None:
        try:
            barrier.wait()
            runs[command] = PipelineRun(spark, config, command, parent_key="race-1")
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=start, args=(c,)) for c in ("decontaminate", "dedup")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    _stage(runs["decontaminate"], "decontaminate", 4)
    _stage(runs["dedup"], "dedup", 6)
    runs["decontaminate"].close()
    runs["dedup"].close()

    parents = [r for r in _runs(config) if r.data.tags.get(PARENT_KEY_TAG) == "race-1"]
    assert len(parents) == 1
    (parent,) = parents
    assert {runs[c].mlflow_run_id for c in runs} == {parent.info.run_id}
    assert set(_children(config, parent.info.run_id)) == {"decontaminate", "dedup"}
    assert parent.info.status == "FINISHED"


def test_settling_keeps_the_earliest_candidate_and_moves_the_others_stage_runs(config, mlflow_store):
    """The race made deterministic: two candidates exist, the later-created one with the earlier
    start (a slow create, or another machine's clock). Whoever settles keeps that one, moves the
    other's stage runs under it and deletes the other; a settle from the loser's side agrees, and
    moves a stage run made under the deleted one too."""
    client = _client(config)
    experiment_id = client.create_experiment(config.mlflow.experiment)
    candidate = {"run_name": "pipeline-k", "tags": {PARENT_KEY_TAG: "k"}}
    late = client.create_run(experiment_id, start_time=2_000, **candidate).info.run_id
    stage = client.create_run(experiment_id, run_name="ingest", tags={PARENT_TAG: late}).info.run_id
    early = client.create_run(experiment_id, start_time=1_000, **candidate).info.run_id

    loser = Tracker(client, experiment_id, late, key="k")  # the process that created `late` and used it
    assert loser.settle() == early
    assert client.get_run(stage).data.tags[PARENT_TAG] == early
    assert client.get_run(late).info.lifecycle_stage == "deleted"
    assert Tracker(client, experiment_id, early, key="k").settle() == early
    # a stage run made under `late` by a process that settled just before `late` was deleted
    stray = client.create_run(experiment_id, run_name="clean", tags={PARENT_TAG: late}).info.run_id
    assert Tracker(client, experiment_id, late, key="k").settle() == early  # as that process closes
    assert client.get_run(stray).data.tags[PARENT_TAG] == early
    live = client.search_runs([experiment_id], f"tags.`{PARENT_KEY_TAG}` = 'k'")
    assert [r.info.run_id for r in live] == [early]
    assert len(client.search_runs([experiment_id], run_view_type=ViewType.ALL)) == 4  # late is deleted, not gone


def test_a_key_that_does_not_fit_a_search_filter_is_refused(spark, config):
    with pytest.raises(ValueError, match="--parent-run"):
        PipelineRun(spark, config, "ingest", parent_key="x' OR '1'='1")


def test_the_mechanism_is_mlflows_documented_parent_tag():
    """mlflow.start_run(nested=True) and the tag we set name the parent the same way."""
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    assert MLFLOW_PARENT_RUN_ID == PARENT_TAG
