# Databricks notebook source
# MAGIC %md
# MAGIC # Explore a subset
# MAGIC FineVision's figures for one subset (`v_subset_stats`), a few of its samples with their images, and where it
# MAGIC overlaps benchmarks or other subsets. Set `FINEVISION_SUBSET` (or edit `SUBSET`) to pick one; by default the largest.

# COMMAND ----------

import os

from IPython.display import HTML, display
from pyspark.sql import functions as F

from etl.notebooks import notebook_context

ctx = notebook_context(globals().get("spark"))
spark = ctx.spark
print("views:", ", ".join(ctx.views))

# COMMAND ----------

SUBSET = os.environ.get("FINEVISION_SUBSET") or spark.sql(
    "SELECT name FROM v_subset_stats ORDER BY samples DESC, name LIMIT 1"
).first()["name"]
stats = spark.table("v_subset_stats").filter(F.col("name") == SUBSET)
stats.toPandas().T

# COMMAND ----------

# MAGIC %md
# MAGIC The subset against its category and the whole corpus.

# COMMAND ----------

category = stats.first()["category"]
columns = ["level", "name", "samples", "images", "turns", "question_tokens", "answer_tokens", "sample_share",
           "contaminated_sample_rate", "near_duplicate_share"]
stats.select(columns).unionByName(
    spark.table("v_category_stats").filter(F.col("name").isin(category, "*")).select(columns)
).toPandas()

# COMMAND ----------

# MAGIC %md
# MAGIC A few samples: their images (thumbnails made on the executors) and first turns.

# COMMAND ----------

from etl import tables
from etl.pages import thumbnail_html

silver = tables.read(spark, tables.TableRef.of(ctx.config, "silver_samples"))
thumb = F.udf(lambda data: thumbnail_html(data, 160) if data is not None else "")
rows = (
    silver.filter(F.col("subset") == SUBSET)
    .orderBy("sample_id")
    .limit(4)
    .select("sample_id", thumb(F.col("images")[0]["bytes"]).alias("thumb"), F.col("texts")[0].alias("turn"), F.size("texts").alias("turns"))
    .collect()
)
assert rows, f"no samples in subset {SUBSET}"
display(HTML("".join(
    f"<div style='margin:.5em 0'>{r['thumb']}<b>{r['sample_id']}</b> ({r['turns']} turns)<br>"
    f"Q: {r['turn']['user'][:200]}<br>A: {r['turn']['assistant'][:200]}</div>"
    for r in rows
)))

# COMMAND ----------

# MAGIC %md
# MAGIC Diversity of the subset's SSCD embeddings next to the corpus.

# COMMAND ----------

if "v_diversity" in ctx.views:
    display(spark.table("v_diversity").filter(F.col("name").isin(SUBSET, "*")).orderBy("level").toPandas())
