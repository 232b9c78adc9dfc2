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
