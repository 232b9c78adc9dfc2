"""`finevision decontaminate`: image and text hits against the benchmarks -> contamination_hits,
contamination_rates, and removed_samples under policy `remove`."""

from __future__ import annotations

import logging

import numpy as np
from pyspark import StorageLevel
from pyspark.sql import functions as F

from etl import tables
from etl.jobs.embed import embedder_spec
from etl.runs import PipelineRun
from etl.schema import CONTAMINATION_HITS, REMOVED_SAMPLES
from etl.sources.files import ArrowFiles
from etl.stages import decontaminate as stage
from udfs.knn import build_index, index_fingerprint, serialize_index
from udfs.sscd import model_id

log = logging.getLogger("finevision")
HIT_KEYS = ["sample_id", "image_id", "benchmark", "benchmark_item_id", "method", "model_id", "threshold"]


def index_source(run: PipelineRun, data: bytes) -> stage.IndexSource:
    """Ship the serialised index: a broadcast, or a file under the lakehouse for huge indexes."""
    fingerprint = index_fingerprint(data)
    if run.config.decontaminate.index_transport == "broadcast":
        broadcast = run.spark.sparkContext.broadcast(data)
        return stage.IndexSource(fingerprint, lambda: broadcast.value)
    from pyarrow import fs as pafs

    root = tables.TableRef.of(run.config, "_indexes").path or run.config.lakehouse
    path = f"{root}/{fingerprint}.faiss"
    filesystem, local = pafs.FileSystem.from_uri(path) if "://" in path else (pafs.LocalFileSystem(), path)
    filesystem.create_dir(local.rsplit("/", 1)[0], recursive=True)
    with filesystem.open_output_stream(local) as out:
        out.write(data)
    size = len(data)
    return stage.IndexSource(fingerprint, lambda: ArrowFiles().read_bytes(path, size + 1))


def run(run: PipelineRun) -> None:
    spark, settings = run.spark, run.config.decontaminate
    model = model_id(embedder_spec(run))
    method = f"sscd-faiss-{settings.index}"
    with run.stage("decontaminate") as report:
        silver = run.read_input(report, "silver_samples")
        items = run.read_input(report, "benchmark_items")
        embeddings = run.read_input(report, "image_embeddings").filter(F.col("model_id") == model)
        training, benchmark = stage.image_occurrences(silver), stage.benchmark_occurrences(items)

        # The benchmark side is bounded (the evaluation sets), so it is gathered on the driver.
        bench_rows = (
            embeddings.join(benchmark.select("image_id").distinct(), "image_id")
            .select("image_id", "embedding").orderBy("image_id").collect()
        )
        hits = stage.text_hits(silver, items, settings.text_ngram, settings.text_min_words or settings.text_ngram, run.run_id)
        if bench_rows:
            vectors = np.array([r["embedding"] for r in bench_rows], dtype=np.float32)
            index = build_index(vectors, kind=settings.index, nprobe=settings.nprobe)
            log.info("[decontaminate] %s index over %d benchmark images", settings.index, len(bench_rows))
            source = index_source(run, serialize_index(index))
            index_rows = spark.createDataFrame(
                [(i, r["image_id"]) for i, r in enumerate(bench_rows)], "index_row long, bench_image_id string"
            )
            train_embeddings = embeddings.join(training.select("image_id").distinct(), "image_id")
            found = stage.search_training_images(train_embeddings, source, settings.threshold, settings.k)
            image_hits = stage.image_hits(
                found, index_rows, training, benchmark, model, settings.threshold, method, run.run_id
            )
            hits = image_hits.unionByName(hits)
        else:
            log.warning("[decontaminate] no benchmark image has an embedding of %s: image side skipped", model)
        hits = hits.persist(StorageLevel.MEMORY_AND_DISK)
        try:
            by_method = {r["method"]: r["n"] for r in hits.groupBy("method").agg(F.count("*").alias("n")).collect()}
            report.rows_in = silver.count()
            report.counters = {f"hits.{m}": n for m, n in by_method.items()}
            commit = run.commit("decontaminate")
            report.output_versions["contamination_hits"] = tables.merge_insert(
                spark, run.table("contamination_hits"), hits, HIT_KEYS, commit, CONTAMINATION_HITS
            )
            rates = stage.contamination_rates(silver, hits)
            report.output_versions["contamination_rates"] = tables.overwrite(
                spark, run.table("contamination_rates"), rates, commit, stage.CONTAMINATION_RATES
            )
            overall = rates.filter("subset = '*'").first()
            report.counters["contaminated_samples"] = overall["contaminated_samples"] if overall else 0
            report.rows_out = report.rows_in
            if settings.policy == "remove":
                removed = stage.removals(hits, run.run_id)
                report.output_versions["removed_samples"] = tables.merge_insert(
                    spark, run.table("removed_samples"), removed, ["sample_id", "stage"], commit, REMOVED_SAMPLES
                )
                report.dropped = {"contaminated": report.counters["contaminated_samples"]}
                report.rows_out = report.rows_in - report.dropped["contaminated"]
        finally:
            hits.unpersist()
