"""Analyze stage scaling: seconds of `finevision analyze` on 1x, 2x and 4x the demo corpus.

The larger corpora are made cheaply from an existing lakehouse (by default `lakehouse/`, written
by `make demo`): silver_samples, image_embeddings, contamination_hits and near_duplicate_clusters
are unioned with re-keyed copies (copy k appends `-k` to every sample_id, image_id and
cluster_id), so every copy adds new samples, new distinct images and new hits, exactly as the
original's. Only the analyze stage is timed (subset_stats, diversity_metrics, action_stats, with
their Delta writes); the copies are written beforehand. Ratios are against 1x in the same run;
linear growth means a time ratio close to the size ratio.

    .venv/bin/python bench/analyze_scaling.py [--lakehouse lakehouse] [--factors 1 2 4] [--repeats 1]

With --repeats > 1 each size keeps its best time (the machine is shared).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from functools import reduce
from pathlib import Path

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from etl import tables
from etl.config import load_config
from etl.jobs import analyze
from etl.runs import PipelineRun
from etl.session import build_session

COPIED = ("silver_samples", "image_embeddings", "contamination_hits", "near_duplicate_clusters")


def _suffix(column, k: int):
    return column if k == 0 else F.concat(column, F.lit(f"-{k}"))


def rekeyed(name: str, frame: DataFrame, k: int) -> DataFrame:
    """Copy k of a table with every id made distinct from the other copies."""
    if name == "silver_samples":
        images = F.transform("images", lambda i: i.withField("image_id", _suffix(i["image_id"], k)))
        return frame.withColumn("sample_id", _suffix(F.col("sample_id"), k)).withColumn("images", images)
    if name == "image_embeddings":
        return frame.withColumn("image_id", _suffix(F.col("image_id"), k))
    if name == "contamination_hits":
        return frame.withColumn("sample_id", _suffix(F.col("sample_id"), k)).withColumn(
            "image_id", _suffix(F.col("image_id"), k)
        )
    return frame.withColumn("image_id", _suffix(F.col("image_id"), k)).withColumn(
        "cluster_id", _suffix(F.col("cluster_id"), k)
    )


def build_corpus(spark, source_config, target: Path, factor: int):
    config = load_config(overrides=[f"lakehouse={target}", "mlflow.enabled=false"])
    for name in COPIED:
        ref = tables.TableRef.of(source_config, name)
        if not tables.exists(spark, ref):
            raise SystemExit(f"{name} not found in {source_config.lakehouse}: run `make demo` first")
        frame = tables.read(spark, ref)
        copies = reduce(DataFrame.unionByName, [rekeyed(name, frame, k) for k in range(factor)])
        copies.write.format("delta").mode("overwrite").save(tables.TableRef.of(config, name).path)
    return config


def time_analyze(spark, config) -> float:
    run = PipelineRun(spark, config, "bench-analyze")
    start = time.perf_counter()
    analyze.run(run)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lakehouse", default="lakehouse")
    parser.add_argument("--factors", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()

    spark = build_session("local", {"spark.sql.shuffle.partitions": "4"})
    spark.sparkContext.setLogLevel("ERROR")
    source = load_config(overrides=[f"lakehouse={args.lakehouse}", "mlflow.enabled=false"])
    with tempfile.TemporaryDirectory(prefix="analyze-scaling-") as tmp:
        configs = {f: build_corpus(spark, source, Path(tmp) / f"x{f}", f) for f in args.factors}
        time_analyze(spark, configs[args.factors[0]])  # warm-up: Python workers, tokenizer, JIT
        best: dict[int, float] = {}
        for _ in range(args.repeats):
            for factor in args.factors:
                seconds = time_analyze(spark, configs[factor])
                best[factor] = min(best.get(factor, seconds), seconds)
        samples = {
            f: tables.read(spark, tables.TableRef.of(configs[f], "silver_samples")).count() for f in args.factors
        }
    base = args.factors[0]
    print(f"{'size':>5} {'samples':>8} {'seconds':>8} {'size ratio':>10} {'time ratio':>10}")
    for factor in args.factors:
        print(
            f"{factor:>4}x {samples[factor]:>8} {best[factor]:>8.1f} {factor / base:>10.1f} {best[factor] / best[base]:>10.2f}"
        )


if __name__ == "__main__":
    main()
