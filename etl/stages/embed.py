"""SSCD embeddings of every distinct image, computed once per (image_id, model).

The UDF is an iterator of pandas frames (`mapInPandas`): the model is loaded once per Python
worker (`get_embedder`'s cache), Arrow batches arrive sized by bytes (the job sets
`arrow.maxBytesPerBatch`), and the model runs in its own micro-batches inside `embed_bytes`,
which is plain numpy in and out. `mapInPandas` takes a `ResourceProfile`, so on a GPU cluster the
stage's tasks can hold a GPU each while other stages use every core (see `etl/resources.py`).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, FloatType, StringType, StructField, StructType

from etl.schema import require_columns
from udfs.sscd import EmbedderSpec, embed_bytes


def distinct_images(frame: DataFrame) -> DataFrame:
    """(image_id, bytes) of every distinct image in a frame with an `images` column."""
    require_columns(frame, ["images"], "distinct_images")
    image = F.explode("images").alias("image")
    return frame.select(image).select("image.image_id", "image.bytes").dropDuplicates(["image_id"])


def images_without_embedding(images: DataFrame, embeddings: DataFrame | None, model: str) -> DataFrame:
    """The images that have no embedding of this model yet (what an incremental run embeds)."""
    if embeddings is None:
        return images
    done = embeddings.filter(F.col("model_id") == model).select("image_id")
    return images.join(done, "image_id", "left_anti")


EMBEDDED = StructType([
    StructField("image_id", StringType()),
    StructField("model_id", StringType()),
    StructField("embedding", ArrayType(FloatType())),
])


def embed_images(images: DataFrame, spec: EmbedderSpec, model: str, profile=None) -> DataFrame:
    """(image_id, model_id, embedding); embedding is null where the image does not decode.

    `profile`: a `pyspark.resource.ResourceProfile` the stage's tasks run under (GPUs), or None."""
    require_columns(images, ["image_id", "bytes"], "embed_images")

    def sscd(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            vectors = embed_bytes(spec, batch["bytes"].tolist())
            yield pd.DataFrame({
                "image_id": batch["image_id"],
                "model_id": model,
                "embedding": [None if np.isnan(row[0]) else row for row in vectors],
            })

    return images.select("image_id", "bytes").mapInPandas(sscd, EMBEDDED, profile=profile)
