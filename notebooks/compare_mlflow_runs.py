# Databricks notebook source
# MAGIC %md
# MAGIC # Compare MLflow runs
# MAGIC A pipeline run is one MLflow parent run (its configuration as parameters) with a nested run per stage: the
# MAGIC stage's metrics (rows in/out, dropped by reason, seconds) and the table versions it read and wrote as
# MAGIC parameters (docs/clusters.md, "One pipeline run in MLflow"). Put pipeline runs side by side, and tie them to
# MAGIC `pipeline_runs`.

# COMMAND ----------

import mlflow
from IPython.display import display

from etl import tables
from etl.notebooks import notebook_context

ctx = notebook_context(globals().get("spark"))
spark = ctx.spark
mlflow.set_tracking_uri(ctx.config.mlflow.tracking_uri)
experiment = mlflow.get_experiment_by_name(ctx.config.mlflow.experiment)
print("tracking:", ctx.config.mlflow.tracking_uri, "experiment:", experiment.experiment_id if experiment else None)

# COMMAND ----------

import pandas as pd

PARENT = "tags.mlflow.parentRunId"
found = mlflow.search_runs(experiment_names=[ctx.config.mlflow.experiment], order_by=["start_time DESC"],
                           max_results=500) if experiment else None
if found is None or found.empty:
    runs = stage_runs = None
    print("no MLflow runs yet: run `finevision run` with mlflow.enabled=true")
else:
    nested = found[PARENT].notna() if PARENT in found else pd.Series(False, index=found.index)
    runs, stage_runs = found[~nested].head(20), found[nested]  # pipeline runs (parents), and their stages
    print("pipeline runs:", ", ".join(runs.run_id))
    metrics = sorted(c for c in stage_runs.columns if c.startswith("metrics.") and c.endswith((".rows_out", ".seconds")))
    per_stage_metrics = stage_runs[stage_runs[PARENT].isin(runs.run_id)]
    display(per_stage_metrics.set_index([PARENT, "tags.mlflow.runName"])[metrics].T)

# COMMAND ----------

# MAGIC %md
# MAGIC The same runs in the Delta run log: per stage, the versions read and written.

# COMMAND ----------

log = tables.read(spark, tables.TableRef.of(ctx.config, "pipeline_runs"))
per_stage = log.select("run_id", "stage", "status", "rows_in", "rows_out", "input_versions", "output_versions",
                       "mlflow_run_id").orderBy("started_at").toPandas()
if runs is not None and not runs.empty:
    linked = set(per_stage.mlflow_run_id.dropna()) & set(runs.run_id)
    assert linked, "pipeline_runs rows point at MLflow runs of this experiment"
per_stage

# COMMAND ----------

# MAGIC %md
# MAGIC Differences between the two most recent runs, metric by metric.

# COMMAND ----------

if runs is not None and len(runs) >= 2:
    latest, previous = runs.run_id.iloc[0], runs.run_id.iloc[1]

    def stage_metrics(parent: str) -> pd.Series:  # every stage run's metrics of one pipeline run, as one row
        return stage_runs[stage_runs[PARENT] == parent].filter(like="metrics.").max()

    before, after = stage_metrics(previous), stage_metrics(latest)
    changed = {c: (before[c], after[c]) for c in before.index.union(after.index)
               if not (pd.isna(before.get(c)) and pd.isna(after.get(c))) and before.get(c) != after.get(c)}
    print(f"{len(changed)} metric(s) differ between pipeline runs {previous} and {latest}")
else:
    print("one run only: nothing to compare yet")

# COMMAND ----------

# MAGIC %md
# MAGIC Trained models compared the paper's way: each run's reported score per benchmark (the official aggregate
# MAGIC where the benchmark has one: MME's totals, MMStar's category mean, OCRBench of 1000; else its metric's
# MAGIC mean), and its average rank over them (per benchmark the runs are ranked, the best 1, ties sharing the
# MAGIC average rank; `etl/train/ranks.py`). `finevision evaluate` logs into the model's training run, or into the
# MAGIC evaluation experiment.

# COMMAND ----------


from etl.train.config import MlflowTrainConfig
from etl.train.evaluate import load_eval_config
from etl.train.ranks import average_ranks, reported_scores
from etl.train.run import experiment_name

names = {load_eval_config().experiment, MlflowTrainConfig().experiment}
found = [mlflow.get_experiment_by_name(experiment_name(n, ctx.config.mlflow.tracking_uri)) for n in sorted(names)]
evaluated = mlflow.search_runs([e.experiment_id for e in found if e], max_results=50) if any(found) else pd.DataFrame()
scores = {
    run["run_id"]: reported_scores({k.removeprefix("metrics."): v for k, v in run.items()
                                    if k.startswith("metrics.eval/") and pd.notna(v)})
    for _, run in evaluated.iterrows()
}
scores = {run: values for run, values in scores.items() if values}
if len(scores) < 2:
    print(f"{len(scores)} evaluated run(s): run `finevision evaluate` on two models to rank them")
else:
    table = pd.DataFrame.from_dict(scores, orient="index")
    table["average_rank"] = pd.Series(average_ranks(scores))
    display(table.sort_values("average_rank"))
