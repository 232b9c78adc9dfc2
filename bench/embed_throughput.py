"""Embed stage throughput: images per second of the Spark embed stage (`embed_images`, the ONNX
SSCD backend) against bare ONNX Runtime over the same images, in the same run.

Three rates:
- Spark embed stage: `etl.stages.embed.embed_images` over a cached DataFrame of (image_id, JPEG
  bytes), written to a noop sink, configured like `finevision embed` (Arrow batches sized by
  bytes with `spark.sql.execution.arrow.maxBytesPerBatch`, one model thread per task slot). It
  decodes and resizes inside the UDF.
- bare ORT, preprocessed: every image decoded and resized to 320x320 once up front
  (`udfs.sscd.decode_and_resize`, untimed), then only `OnnxEmbedder.embed` over the uint8 array
  in micro-batches, the runtime's default threads, one process. This is the issue's baseline.
- bare ORT + decode: the same, timing decode + resize + embed micro-batch by micro-batch in one
  process (what the Spark path does, without Spark).

Ratios: stage / bare ORT preprocessed (the goal: >= 0.85; the stage pays for decoding here and
the baseline does not), and stage / bare ORT + decode (the cost of Spark itself).

    .venv/bin/python bench/embed_throughput.py [--images 160] [--repeats 1]

With --repeats > 1 the paths are measured alternately that many times and each keeps its best
rate (the machine is shared: the best run is the least disturbed one).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import time

from synthetic_images import make_images

from etl.config import EmbedConfig
from etl.session import build_session
from etl.stages.embed import embed_images
from udfs.sscd import EmbedderSpec, OnnxEmbedder, decode_and_resize, model_id


def bare_ort(images: list[bytes], spec: EmbedderSpec) -> tuple[float, float]:
    """(images/s over preprocessed pixels, images/s with decode + resize), default ORT threads."""
    embedder = OnnxEmbedder(spec.model_path, spec.device, spec.micro_batch)  # intra_op_threads: default
    pixels = decode_and_resize(images, spec.image_size).pixels
    embedder.embed(pixels[: spec.micro_batch])  # warm-up: first runs allocate and pick kernels
    start = time.perf_counter()
    embedder.embed(pixels)
    preprocessed = len(images) / (time.perf_counter() - start)
    start = time.perf_counter()
    for i in range(0, len(images), spec.micro_batch):
        embedder.embed(decode_and_resize(images[i : i + spec.micro_batch], spec.image_size).pixels)
    with_decode = len(images) / (time.perf_counter() - start)
    return preprocessed, with_decode


def spark_stage(spark, images: list[bytes], spec: EmbedderSpec, partitions: int) -> float:
    rows = [(hashlib.sha256(data).hexdigest()[:32], data) for data in images]
    frame = spark.createDataFrame(rows, "image_id string, bytes binary").repartition(partitions).cache()
    frame.count()
    start = time.perf_counter()
    embed_images(frame, spec, model_id(spec)).write.format("noop").mode("overwrite").save()
    rate = len(images) / (time.perf_counter() - start)
    frame.unpersist()
    return rate


def task_slots(spark) -> int:
    match = re.fullmatch(r"local\[(\d+|\*)(?:,\d+)?\]", spark.sparkContext.master)
    if match:
        return (os.cpu_count() or 1) if match.group(1) == "*" else int(match.group(1))
    return spark.sparkContext.defaultParallelism


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=160)
    parser.add_argument("--repeats", type=int, default=1, help="alternate the paths this often, keep each best")
    args = parser.parse_args()
    settings = EmbedConfig()
    images = make_images(args.images)
    spark = build_session("local", {"spark.sql.execution.arrow.maxBytesPerBatch": str(settings.arrow_batch_bytes)})
    slots = task_slots(spark)
    spec = EmbedderSpec(
        backend=settings.backend,
        model_path=settings.model_path,
        image_size=settings.image_size,
        micro_batch=settings.micro_batch,
        device=settings.device,
        intra_op_threads=int(spark.conf.get("spark.task.cpus", "1")),  # as etl/jobs/embed.py
    )
    # warm the Python workers: one task per slot, each loads the model once
    spark_stage(spark, make_images(2 * slots, seed=1), spec, slots)
    stage_rate = ort_rate = ort_decode_rate = 0.0
    for _ in range(max(1, args.repeats)):
        stage_rate = max(stage_rate, spark_stage(spark, images, spec, slots))
        preprocessed, with_decode = bare_ort(images, spec)
        ort_rate, ort_decode_rate = max(ort_rate, preprocessed), max(ort_decode_rate, with_decode)
    spark.stop()
    print(
        f"images: {len(images)} ({sum(map(len, images)) / 1e6:.1f} MB of JPEG), model: {model_id(spec)}, "
        f"best of {max(1, args.repeats)}"
    )
    print(
        f"task slots: {slots}, cores: {os.cpu_count()}, load average: {', '.join(f'{v:.2f}' for v in os.getloadavg())}"
    )
    print(f"bare ORT, preprocessed (1 process): {ort_rate:7.1f} images/s")
    print(f"bare ORT + decode (1 process):      {ort_decode_rate:7.1f} images/s")
    print(f"Spark embed stage (with decode):    {stage_rate:7.1f} images/s")
    print(f"ratio stage / bare ORT preprocessed: {stage_rate / ort_rate:.2f} (goal >= 0.85)")
    print(f"ratio stage / bare ORT + decode:     {stage_rate / ort_decode_rate:.2f}")


if __name__ == "__main__":
    main()
