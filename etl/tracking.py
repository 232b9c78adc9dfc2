"""One pipeline run, one MLflow record: a parent run with a nested run per stage.

A `finevision run` in one process creates its parent and nests each stage under it. On a cluster
each stage is its own process (a Databricks bundle task, an EMR step), so there the processes of
one pipeline run share a parent found by a key that the orchestrator gives every one of them
(`--parent-run`: Databricks' `{{job.run_id}}`, a key the EMR steps file carries). A child names
its parent with MLflow's `mlflow.parentRunId` tag, which is what `mlflow.start_run(nested=True)`
sets too, and which works across processes (tests/fixtures/pipeline_run_keys.yaml cites both).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, Run, ViewType
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from mlflow.utils.time import get_current_time_millis

log = logging.getLogger("finevision")

PARENT_KEY_TAG = "finevision.parent_key"
KEY = re.compile(r"[A-Za-z0-9_.:-]{1,200}")  # what a key may hold: it goes into MLflow's search filters


@dataclass
class Tracker:
    """The MLflow side of a PipelineRun: its parent run and the stage runs nested under it."""

    client: MlflowClient
    experiment_id: str
    parent_id: str
    key: str | None  # the shared parent's key; None: the parent is this process's own

    @classmethod
    def start(
        cls, tracking_uri: str, experiment: str, run_name: str, tags: dict[str, str], params: dict[str, str], key=None
    ) -> Tracker:
        """The parent run: a new one, or with `key` the one that every process given the key shares."""
        if key is not None and not KEY.fullmatch(key):
            raise ValueError(f"--parent-run {key!r}: letters, digits and _ . : - only (at most 200)")
        client = MlflowClient(tracking_uri)
        experiment_id = _experiment_id(client, experiment)
        if key is None:
            tracker = cls(
                client, experiment_id, client.create_run(experiment_id, run_name=run_name, tags=tags).info.run_id, None
            )
        else:
            if not _candidates(client, experiment_id, key):
                client.create_run(experiment_id, run_name=run_name, tags=tags | {PARENT_KEY_TAG: key})
            tracker = cls(client, experiment_id, "", key)
            tracker.parent_id = tracker.settle()
            tracker._on_parent(lambda parent: client.update_run(parent, status="RUNNING"))  # an earlier task ended it
        tracker._log_parent_params(params)
        return tracker

    def settle(self) -> str:
        """The one parent of this key: the least live candidate (earliest start, then run id). The
        stage runs of every other candidate, live or deleted, move under it, and the other live
        candidates are deleted.

        Why racing processes converge on one parent: each creates its candidate before it first
        settles, and a settle deletes only candidates greater than one it sees, so the least
        candidate ever created is never deleted; once its creation is visible, every settle keeps
        it. Every process settles again before each stage and when it closes, after its last stage
        run exists; so once the tasks that started together have closed, every stage run is under
        that one parent, even one made under a candidate deleted meanwhile (hence deleted ones too)."""
        everything = _candidates(self.client, self.experiment_id, self.key, ViewType.ALL)
        live = [run for run in everything if run.info.lifecycle_stage == "active"]
        if not live:
            raise MlflowException(f"every MLflow parent run of --parent-run {self.key} was deleted (by hand?)")
        winner = live[0].info.run_id
        for other in (run.info.run_id for run in everything if run.info.run_id != winner):
            for child in self._children(other):
                self.client.set_tag(child.info.run_id, MLFLOW_PARENT_RUN_ID, winner)
        for other in live[1:]:
            try:
                self.client.delete_run(other.info.run_id)
            except MlflowException:  # another process deleted it first
                pass
        return winner

    def start_stage(self, stage: str, tags: dict[str, str]) -> str:
        """A running stage run nested under the parent; its id."""
        if self.key:
            self.parent_id = self.settle()
        tags = tags | {MLFLOW_PARENT_RUN_ID: self.parent_id}
        return self.client.create_run(self.experiment_id, run_name=stage, tags=tags).info.run_id

    def end_stage(self, run_id: str, metrics: dict[str, float], params: dict[str, int], failed: bool) -> None:
        now = get_current_time_millis()
        self.client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
            params=[Param(k, str(v)) for k, v in params.items()],
        )
        self.client.set_terminated(run_id, "FAILED" if failed else "FINISHED")

    def close(self, failed: bool) -> str:
        """End the parent unless a stage run of it is still running (that task ends it when it
        closes): FAILED where this process failed or the latest run of some stage failed (a retried
        task's new run replaces its failed one), else FINISHED. Returns the parent's id."""
        if self.key:
            self.parent_id = self.settle()
        latest: dict[str, Run] = {}
        for child in sorted(self._children(self.parent_id), key=lambda run: run.info.start_time):
            latest[child.info.run_name] = child
        statuses = {child.info.status for child in latest.values()}
        if failed or "FAILED" in statuses:
            self._on_parent(lambda parent: self.client.set_terminated(parent, "FAILED"))
        elif "RUNNING" not in statuses:
            self._on_parent(lambda parent: self.client.set_terminated(parent, "FINISHED"))
        return self.parent_id

    def _on_parent(self, write: Callable[[str], object]) -> None:
        """`write` to the parent; where a racing process deleted it meanwhile, to the one that settles."""
        for attempt in range(3):
            try:
                write(self.parent_id)
                return
            except MlflowException:
                if not self.key or attempt == 2 or self.client.get_run(self.parent_id).info.lifecycle_stage == "active":
                    raise
                self.parent_id = self.settle()

    def _log_parent_params(self, params: dict[str, str]) -> None:
        """The configuration on the parent. Processes sharing it log the same values (where two do
        at once, one insert loses); a process whose configuration differs keeps its `config_hash`
        on its stage runs, and the parent the first one's."""
        try:
            self._on_parent(
                lambda parent: self.client.log_batch(parent, params=[Param(k, v) for k, v in params.items()])
            )
        except MlflowException:
            logged = self.client.get_run(self.parent_id).data.params
            differing = sorted(k for k, v in params.items() if logged.get(k, v) != v)
            if differing:
                log.warning("MLflow parent run %s keeps another configuration: %s", self.parent_id, differing[:10])

    def _children(self, parent_id: str) -> list[Run]:
        return self.client.search_runs([self.experiment_id], f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_id}'")


def _experiment_id(client: MlflowClient, name: str) -> str:
    """The experiment's id, created where it is missing (by this process or a racing one)."""
    for _ in range(2):
        experiment = client.get_experiment_by_name(name)
        if experiment:
            return experiment.experiment_id
        try:
            return client.create_experiment(name)
        except MlflowException:  # created by another process meanwhile
            continue
    raise MlflowException(f"could not create or find the MLflow experiment {name}")


def _candidates(client: MlflowClient, experiment_id: str, key: str | None, view=ViewType.ACTIVE_ONLY) -> list[Run]:
    """The parent runs tagged with `key` (live ones only, unless `view` says), least (earliest start,
    then run id) first."""
    found = client.search_runs([experiment_id], f"tags.`{PARENT_KEY_TAG}` = '{key}'", run_view_type=view)
    return sorted(found, key=lambda run: (run.info.start_time, run.info.run_id))
