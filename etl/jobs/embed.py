"""`finevision embed`: every distinct image of silver_samples and benchmark_items -> image_embeddings.

Incremental: only images without an embedding of the configured model are embedded.
"""

from __future__ import annotations

from pyspark.sql import functions as F

from etl import tables
from etl.confs import session_conf
from etl.resources import stage_resource_profile, task_cpus
from etl.reuse import reused
from etl.runs import PipelineRun
from etl.schema import IMAGE_EMBEDDINGS
from etl.sources.base import Reason
from etl.specs import embedder_spec
from etl.stages.embed import embed_images, images_to_embed
from etl.stages.quarantine import counts_by_reason, image_rejections
from udfs.sscd import model_id

ARROW_BATCH_BYTES = "spark.sql.execution.arrow.maxBytesPerBatch"
EMBEDDING_CONSTRAINTS = {"embedding_is_512_d": "size(embedding) = 512"}


def run(run: PipelineRun) -> None:
    spark, config = run.spark, run.config
    profile = stage_resource_profile(spark, "embed")  # GPUs per task on a GPU cluster, else None
    spec = embedder_spec(config, task_cpus(run.spark, profile))
    model = model_id(spec)
    with run.stage("embed") as report:
        frames = [run.read_input(report, "silver_samples"), run.read_input(report, "benchmark_items")]
        target = run.table("image_embeddings")
        existing = tables.read(spark, target) if tables.exists(spark, target) else None
        todo = images_to_embed(frames, existing, model)
        with session_conf(spark, {ARROW_BATCH_BYTES: str(config.embed.arrow_batch_bytes)}):
            # the model runs once; on serverless its vectors go to a scratch table
            with run.scratch() as scratch, reused(embed_images(todo, spec, model, profile), scratch) as embedded:
                undecodable = F.when(F.col("embedding").isNull(), F.lit(str(Reason.UNDECODABLE_IMAGE)))
                report.count_outcomes(counts_by_reason(embedded, undecodable))
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
                if report.dropped:
                    detail = F.concat(F.lit(f"{model} could not decode image "), F.col("image_id"))
                    failed = embedded.filter(F.col("embedding").isNull())
                    run.write_quarantine(
                        report, image_rejections(failed, frames, Reason.UNDECODABLE_IMAGE, detail), commit
                    )
