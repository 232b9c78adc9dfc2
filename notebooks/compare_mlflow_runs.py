# Databricks notebook source
# MAGIC %md
# MAGIC # Compare MLflow runs
# MAGIC Every CLI command is one MLflow run with per-stage metrics (rows in/out, dropped by reason, seconds) and the
# MAGIC table versions it read and wrote as parameters. Put runs side by side, and tie them to `pipeline_runs`.

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

runs = mlflow.search_runs(experiment_names=[ctx.config.mlflow.experiment], order_by=["start_time DESC"], max_results=20) \
    if experiment else None
if runs is None or runs.empty:
    print("no MLflow runs yet: run `finevision run` with mlflow.enabled=true")
else:
    print("runs:", ", ".join(runs.run_id))
    metrics = [c for c in runs.columns if c.startswith("metrics.") and c.endswith((".rows_out", ".seconds"))]
    display_cols = ["run_id", "tags.mlflow.runName", "status", "params.config_hash"] + sorted(metrics)
    display(runs[display_cols].set_index("run_id").T)

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
    latest, previous = runs.iloc[0], runs.iloc[1]
    changed = {c: (previous[c], latest[c]) for c in runs.columns if c.startswith("metrics.") and previous[c] != latest[c]}
    print(f"{len(changed)} metric(s) differ between {previous.run_id} and {latest.run_id}")
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

import pandas as pd

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
