# Databricks notebook source
# MAGIC %md
# MAGIC # Review contamination
# MAGIC Which benchmarks the corpus overlaps, from which subsets, and the pairs side by side (training image, benchmark
# MAGIC image, score, both texts). Decide per benchmark whether to keep the policy `flag` or switch to `remove`.

# COMMAND ----------

import tempfile
from pathlib import Path

from IPython.display import HTML, display

from etl.notebooks import notebook_context

ctx = notebook_context(globals().get("spark"))
spark = ctx.spark

# COMMAND ----------

by_benchmark = spark.sql("SELECT * FROM v_contamination_by_benchmark ORDER BY hits DESC, benchmark").toPandas()
by_benchmark

# COMMAND ----------

# MAGIC %md
# MAGIC Contamination rate per subset (share of samples with a hit), worst first.

# COMMAND ----------

rates = spark.sql(
    "SELECT name AS subset, samples, contaminated_sample_rate, contaminated_image_rate FROM v_subset_stats "
    "ORDER BY contaminated_sample_rate DESC, name"
).toPandas()
overall = spark.sql("SELECT contaminated_sample_rate FROM v_category_stats WHERE level = 'total'").first()[0]
print(f"overall: {overall:.2%} of samples (FineVision reports 1.02%)")
rates

# COMMAND ----------

pairs = spark.sql("SELECT * FROM v_contamination_pairs ORDER BY samples DESC").toPandas()
assert pairs["hits"].sum() == by_benchmark["hits"].sum()  # both views count every hit once
pairs

# COMMAND ----------

# MAGIC %md
# MAGIC The pairs themselves, best first (the same page as `finevision review contamination`).

# COMMAND ----------

from etl.review import write_contamination_review

page = write_contamination_review(spark, ctx.config, Path(tempfile.mkdtemp()) / "contamination.html", limit=20)
display(HTML(page.read_text(encoding="utf-8")))
