"""`finevision embed`: every distinct image of silver_samples and benchmark_items -> image_embeddings.

Incremental: only images without an embedding of the configured model are embedded.
"""

from __future__ import annotations

from pyspark import StorageLevel
from pyspark.sql import functions as F

from etl import assets, tables
from etl.confs import session_conf
from etl.resources import stage_resource_profile, task_cpus
from etl.runs import PipelineRun
from etl.schema import IMAGE_EMBEDDINGS, QUARANTINE
from etl.stages.embed import embed_images, images_to_embed
from etl.stages.quarantine import quarantine_rows
from udfs.sscd import EmbedderSpec, model_id

ARROW_BATCH_BYTES = "spark.sql.execution.arrow.maxBytesPerBatch"
EMBEDDING_CONSTRAINTS = {"embedding_is_512_d": "size(embedding) = 512"}


def embedder_spec(run: PipelineRun, threads: int = 1) -> EmbedderSpec:
    settings = run.config.embed
    return EmbedderSpec(
        backend=settings.backend,
        model_path=assets.sscd_model_path(run.config),
        image_size=settings.image_size,
        micro_batch=settings.micro_batch,
        device=settings.device,
        decode_on_device=settings.decode_on_device,
        # one model thread per task slot, so concurrent tasks do not oversubscribe the cores
        intra_op_threads=threads,
    )


def run(run: PipelineRun) -> None:
    spark, config = run.spark, run.config
    profile = stage_resource_profile(spark, "embed")  # GPUs per task on a GPU cluster, else None
    spec = embedder_spec(run, task_cpus(run.spark, profile))
    model = model_id(spec)
    with run.stage("embed") as report:
        frames = [run.read_input(report, "silver_samples"), run.read_input(report, "benchmark_items")]
        target = run.table("image_embeddings")
        existing = tables.read(spark, target) if tables.exists(spark, target) else None
        todo = images_to_embed(frames, existing, model)
        with session_conf(spark, {ARROW_BATCH_BYTES: str(config.embed.arrow_batch_bytes)}):
            embedded = embed_images(todo, spec, model, profile).persist(StorageLevel.MEMORY_AND_DISK)
            try:
                decoded = embedded.groupBy(F.col("embedding").isNotNull().alias("ok")).agg(F.count("*").alias("n"))
                counts = {r["ok"]: r["n"] for r in decoded.collect()}
                report.rows_in = sum(counts.values())
                report.rows_out = counts.get(True, 0)
                if counts.get(False):
                    report.dropped = {"undecodable_image": counts[False]}
                commit = run.commit("embed")
                report.output_versions["image_embeddings"] = tables.merge_insert(
                    spark,
                    target,
                    embedded.filter(F.col("embedding").isNotNull()),
                    ["image_id", "model_id"],
                    commit,
                    IMAGE_EMBEDDINGS,
                    EMBEDDING_CONSTRAINTS,
                )
                if counts.get(False):
                    failed = embedded.filter(F.col("embedding").isNull()).select(
                        F.lit("undecodable_image").alias("reject_reason"),
                        F.concat(F.lit(f"{model} could not decode image "), F.col("image_id")).alias("reject_detail"),
                        F.lit(None).cast("string").alias("subset"),
                        F.lit(None).cast("string").alias("sample_id"),
                        F.struct(
                            F.lit("image_embeddings").alias("file"),
                            F.col("image_id").alias("member"),
                            F.lit(None).cast("long").alias("row"),
                        ).alias("source_ref"),
                        F.col("image_id").alias("raw"),
                    )
                    report.output_versions["quarantine"] = tables.merge_insert(
                        spark,
                        run.table("quarantine"),
                        quarantine_rows(failed, "embed", run.run_id),
                        ["quarantine_id"],
                        commit,
                        QUARANTINE,
                    )
            finally:
                embedded.unpersist()
