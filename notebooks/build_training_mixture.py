# Databricks notebook source
# MAGIC %md
# MAGIC # Build a training mixture with SQL
# MAGIC Pick samples per category with weights, leaving out contaminated samples and all but one sample of each
# MAGIC near-duplicate cluster. Reads `gold_samples` when it exists; otherwise silver_samples joined with
# MAGIC contamination_hits and near_duplicate_clusters gives the same flags.

# COMMAND ----------

from etl import tables
from etl.notebooks import notebook_context

ctx = notebook_context(globals().get("spark"))
spark = ctx.spark


def table_sql(name):
    ref = tables.TableRef.of(ctx.config, name)
    return ref.sql if tables.exists(spark, ref) else None

# COMMAND ----------

gold = table_sql("gold_samples")
if gold:
    candidates = spark.sql(f"SELECT sample_id, subset, category, contaminated, dup_cluster_id FROM {gold}")
else:
    silver, hits, clusters = table_sql("silver_samples"), table_sql("contamination_hits"), table_sql("near_duplicate_clusters")
    hit_ids = f"SELECT DISTINCT sample_id FROM {hits}" if hits else "SELECT CAST(NULL AS STRING) AS sample_id WHERE false"
    cluster_ids = (f"SELECT image_id, cluster_id FROM {clusters}" if clusters
                   else "SELECT CAST(NULL AS STRING) AS image_id, CAST(NULL AS STRING) AS cluster_id WHERE false")
    candidates = spark.sql(f"""
        SELECT s.sample_id, s.subset, s.category, h.sample_id IS NOT NULL AS contaminated,
               min(c.cluster_id) AS dup_cluster_id
        FROM {silver} s
        LEFT JOIN ({hit_ids}) h ON s.sample_id = h.sample_id
        LEFT JOIN (SELECT sample_id, explode(images.image_id) AS image_id FROM {silver}) i ON s.sample_id = i.sample_id
        LEFT JOIN ({cluster_ids}) c ON i.image_id = c.image_id
        GROUP BY s.sample_id, s.subset, s.category, h.sample_id
    """)
candidates.cache().createOrReplaceTempView("candidates")
spark.sql("SELECT category, count(*) samples, sum(int(contaminated)) contaminated, count(dup_cluster_id) in_clusters "
          "FROM candidates GROUP BY category ORDER BY samples DESC").toPandas()

# COMMAND ----------

# MAGIC %md
# MAGIC Weights per category (share of the mixture) and the mixture size. Clean = not contaminated, and the first
# MAGIC sample (by id) of each near-duplicate cluster.

# COMMAND ----------

MIXTURE_SIZE = 300
WEIGHTS = {"General VQA": 0.4, "Chart & Table": 0.3, "Text-only": 0.3}
spark.createDataFrame(list(WEIGHTS.items()), "category string, weight double").createOrReplaceTempView("weights")

mixture = spark.sql(f"""
    WITH clean AS (
        SELECT * FROM (
            SELECT *, row_number() OVER (PARTITION BY dup_cluster_id ORDER BY sample_id) AS in_cluster
            FROM candidates WHERE NOT contaminated
        ) WHERE dup_cluster_id IS NULL OR in_cluster = 1
    ),
    ranked AS (
        SELECT c.*, w.weight, row_number() OVER (PARTITION BY c.category ORDER BY xxhash64(c.sample_id, 7)) AS pick
        FROM clean c JOIN weights w ON c.category = w.category
    )
    SELECT sample_id, subset, category FROM ranked WHERE pick <= round(weight * {MIXTURE_SIZE})
""")
mixture.createOrReplaceTempView("mixture")
composition = spark.sql("SELECT category, count(*) AS samples, count(*) / sum(count(*)) OVER () AS share "
                        "FROM mixture GROUP BY category ORDER BY samples DESC").toPandas()
composition

# COMMAND ----------

# MAGIC %md
# MAGIC Checks: nothing contaminated, at most one sample per near-duplicate cluster, shares as asked (a category
# MAGIC with fewer clean samples than asked gives all it has).

# COMMAND ----------

checks = spark.sql("""
    SELECT sum(int(c.contaminated)) AS contaminated,
           count(c.dup_cluster_id) - count(DISTINCT c.dup_cluster_id) AS extra_cluster_members
    FROM mixture m JOIN candidates c USING (sample_id)
""").first()
assert checks["contaminated"] == 0 and checks["extra_cluster_members"] == 0, checks
available = spark.sql("SELECT category, count(*) n FROM candidates WHERE NOT contaminated GROUP BY category").toPandas()
for row in composition.itertuples():
    asked = round(WEIGHTS[row.category] * MIXTURE_SIZE)
    assert row.samples <= asked and (row.samples == asked or row.samples <= int(available.set_index("category").n[row.category]))
print(f"mixture of {int(composition.samples.sum())} samples; save it with "
      "spark.table('mixture').write.format('delta').save(...) or join it back to silver/gold for training")

# COMMAND ----------

# MAGIC %md
# MAGIC ## Ratings as a training signal: the mixtures side by side
# MAGIC Each `conf/mixtures/*.yaml` is one way to use the judge's scores: sample thresholds (`min_ratings`), per-turn
# MAGIC filtering (`min_turn_ratings`), upsampling (weights above 1), loss weights per turn (`turn_weights`) or a
# MAGIC curriculum (`order_by`). Below, what each keeps of this gold table, through the SQL the trainer itself runs
# MAGIC (`etl.train.mixture`). To compare them as training signals, train one run per mixture on the same pinned
# MAGIC gold version (`finevision train --mixture <name>`; each run is tagged `mixture`), evaluate each
# MAGIC (`finevision evaluate --model ...`), and open `compare_mlflow_runs` (scores and average rank per run).

# COMMAND ----------

import pandas as pd

from etl.train.mixture import MIXTURES_DIR, load_mixture, mixture_predicate, mixture_repeats

rows = []
if gold:
    for path in sorted(MIXTURES_DIR.glob("*.yaml")):
        spec = load_mixture(path)
        where, repeats = mixture_predicate(spec) or "true", mixture_repeats(spec) or "1"
        kept = spark.sql(f"SELECT count(*) AS samples, coalesce(sum({repeats}), 0) AS rows FROM {gold} WHERE {where}").first()
        rows.append({
            "mixture": spec.name,
            "samples": kept["samples"],
            "rows per epoch": kept["rows"],
            "turn filter": ", ".join(f"{a} >= {m}" for a, m in spec.min_turn_ratings.items()) or "-",
            "turn weights": ", ".join(spec.turn_weights) or "-",
            "curriculum": spec.order_by or "-",
        })
    assert all(r["rows per epoch"] >= r["samples"] for r in rows), rows  # repeats only add rows
signals = pd.DataFrame(rows)
signals
