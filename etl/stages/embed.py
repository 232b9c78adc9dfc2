"""SSCD embeddings of every distinct image, computed once per (image_id, model).

The UDF is an iterator of pandas frames (`mapInPandas`): the model is loaded once per Python
worker (`get_embedder`'s cache), Arrow batches arrive sized by bytes (the job sets
`arrow.maxBytesPerBatch`), and the model runs in its own micro-batches inside `embed_bytes`,
which is plain numpy in and out. `mapInPandas` takes a `ResourceProfile`, so on a GPU cluster the
stage's tasks can hold a GPU each while other stages use every core (see `etl/resources.py`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from functools import reduce

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from etl.schema import IMAGE_EMBEDDINGS, image_occurrences, require_columns
from udfs.sscd import EmbedderSpec, embed_bytes


def images_to_embed(frames: list[DataFrame], embeddings: DataFrame | None, model: str) -> DataFrame:
    """(image_id, bytes) of every distinct image of `frames` (each with `sample_id` and `images`)
    that has no embedding of `model` yet, each image once.

    Ids first, bytes last: the distinct and the anti-join against `embeddings` run on ids (image_id,
    and where one copy of the image sits: frame, sample_id, position); then each pending image's
    bytes are fetched from that one copy by a join on those ids, right before the model, so the bytes
    cross the network at most once (not at all when the pending ids are small enough to broadcast).
    """
    copies = []
    for number, frame in enumerate(frames):
        require_columns(frame, ["sample_id", "images"], "images_to_embed")
        ids = image_occurrences(frame, "sample_id", position=True)
        copies.append(ids.select(F.lit(number).alias("frame"), "sample_id", "position", "image_id"))
    one_copy = F.min(F.struct("frame", "sample_id", "position")).alias("copy")
    occurrences = reduce(DataFrame.unionByName, copies).filter(F.col("image_id").isNotNull())
    pending = occurrences.groupBy("image_id").agg(one_copy)
    if embeddings is not None:
        done = embeddings.filter(F.col("model_id") == model).select("image_id")
        pending = pending.join(done, "image_id", "left_anti")
    fetched = []
    for number, frame in enumerate(frames):
        wanted = pending.filter(F.col("copy.frame") == number).select(
            "image_id", F.col("copy.sample_id").alias("sample_id"), F.col("copy.position").alias("position")
        )
        images = image_occurrences(frame, "sample_id", fields=("image_id", "bytes"), position=True)
        fetched.append(images.join(wanted, ["image_id", "sample_id", "position"]).select("image_id", "bytes"))
    return reduce(DataFrame.unionByName, fetched)


def held_embeddings(embeddings: DataFrame, samples: DataFrame) -> DataFrame:
    """The rows of `embeddings` whose image some sample of `samples` holds.

    The vectors stream without a shuffle: the embedded images no sample holds are found on ids alone
    and removed with a broadcast anti-join. Those are the benchmark's images plus images of samples
    that have since left `samples`, so the broadcast is 64-byte ids of a small share of the corpus,
    never vectors. Joining the vectors to the samples' image ids directly shuffles every 2 KB
    vector once those ids outgrow a broadcast.
    """
    require_columns(embeddings, ["image_id"], "held_embeddings")
    held = image_occurrences(samples).select("image_id")
    not_held = embeddings.select("image_id").join(held, "image_id", "left_anti").distinct()
    return embeddings.join(F.broadcast(not_held), "image_id", "left_anti")


def embed_images(images: DataFrame, spec: EmbedderSpec, model: str, profile=None) -> DataFrame:
    """(image_id, model_id, embedding); embedding is null where the image does not decode.

    `profile`: a `pyspark.resource.ResourceProfile` the stage's tasks run under (GPUs), or None."""
    require_columns(images, ["image_id", "bytes"], "embed_images")

    def sscd(batches: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            vectors = embed_bytes(spec, batch["bytes"].tolist())
            yield pd.DataFrame(
                {
                    "image_id": batch["image_id"],
                    "model_id": model,
                    "embedding": [None if np.isnan(row[0]) else row for row in vectors],
                }
            )

    return images.select("image_id", "bytes").mapInPandas(sscd, IMAGE_EMBEDDINGS, profile=profile)
