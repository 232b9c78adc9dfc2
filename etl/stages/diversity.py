"""FineVision's diversity of a dataset, from the covariance of its SSCD embeddings.

eigenvalues λ of the d x d covariance, p_i = λ_i / Σλ:
    effective rank     ER = exp(-Σ p_i ln p_i)
    participation ratio PR = (Σλ)² / Σλ²
    diversity score       = sqrt((ER / d) · (PR / d))

The covariance is accumulated distributively: each partition sums, per group (a subset, a
category, the whole corpus), the count, the vector sum and the outer-product sum of its
embeddings; Spark adds the partial sums per group; the driver receives one d x d matrix per group,
streamed one at a time (`toLocalIterator`), and runs the eigen-decomposition there.

    metrics = diversity_metrics(grouped_embeddings(silver, embeddings))
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import (
    BinaryType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
)

from etl.schema import DIVERSITY_METRICS, image_occurrences, require_columns

_PARTIAL = StructType(
    [
        StructField("level", StringType()),
        StructField("name", StringType()),
        StructField("n", LongType()),
        StructField("dimension", IntegerType()),
        StructField("vector_sum", BinaryType()),  # float64 d
        StructField("outer_sum", BinaryType()),  # float64 d x d
    ]
)


@dataclass(frozen=True)
class Spectrum:
    effective_rank: float
    participation_ratio: float
    diversity_score: float


def effective_rank(eigenvalues: np.ndarray) -> float:
    lam = np.clip(np.asarray(eigenvalues, dtype=np.float64), 0.0, None)
    total = lam.sum()
    if total <= 0:
        return 0.0
    p = lam[lam > 0] / total
    return float(math.exp(-(p * np.log(p)).sum()))


def participation_ratio(eigenvalues: np.ndarray) -> float:
    lam = np.clip(np.asarray(eigenvalues, dtype=np.float64), 0.0, None)
    squares = (lam**2).sum()
    return float(lam.sum() ** 2 / squares) if squares > 0 else 0.0


def diversity_score(effective_rank: float, participation_ratio: float, dimension: int) -> float:
    return math.sqrt((effective_rank / dimension) * (participation_ratio / dimension))


def spectrum_metrics(eigenvalues: np.ndarray) -> Spectrum:
    er, pr = effective_rank(eigenvalues), participation_ratio(eigenvalues)
    return Spectrum(er, pr, diversity_score(er, pr, len(eigenvalues)))


def covariance(n: int, vector_sum: np.ndarray, outer_sum: np.ndarray) -> np.ndarray:
    """Sample covariance from the count, Σx and Σxxᵀ."""
    mean = vector_sum / n
    return (outer_sum - n * np.outer(mean, mean)) / max(n - 1, 1)


def grouped_embeddings(samples: DataFrame, embeddings: DataFrame) -> DataFrame:
    """(level, name, image_id, embedding): each distinct image once per subset, category and total."""
    require_columns(samples, ["subset", "category", "images"], "diversity")
    require_columns(embeddings, ["image_id", "embedding"], "diversity")
    images = image_occurrences(samples, "subset", "category").distinct()
    keyed = (
        images.select(
            "image_id",
            F.explode(
                F.array(
                    F.struct(F.lit("subset").alias("level"), F.col("subset").alias("name")),
                    F.struct(F.lit("category").alias("level"), F.col("category").alias("name")),
                    F.struct(F.lit("total").alias("level"), F.lit("*").alias("name")),
                )
            ).alias("key"),
        )
        .select("key.level", "key.name", "image_id")
        .distinct()
    )
    return keyed.join(embeddings.select("image_id", "embedding"), "image_id")


def _partial_sums(batches: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    acc: dict[tuple[str, str], list] = {}
    for batch in batches:
        for key, group in batch.groupby(["level", "name"], sort=False):
            level, name = str(key[0]), str(key[1])
            x = np.stack(group["embedding"].to_numpy()).astype(np.float64)
            entry = acc.setdefault((level, name), [0, np.zeros(x.shape[1]), np.zeros((x.shape[1], x.shape[1]))])
            entry[0] += len(x)
            entry[1] += x.sum(axis=0)
            entry[2] += x.T @ x
    rows = [(level, name, n, len(s), s.tobytes(), o.tobytes()) for (level, name), (n, s, o) in acc.items()]
    yield pd.DataFrame(rows, columns=_PARTIAL.fieldNames())


def _add_partials(key: tuple, parts: pd.DataFrame) -> pd.DataFrame:
    d = int(parts["dimension"].iloc[0])
    s = np.sum([np.frombuffer(b, dtype=np.float64) for b in parts["vector_sum"]], axis=0)
    o = np.sum([np.frombuffer(b, dtype=np.float64) for b in parts["outer_sum"]], axis=0)
    return pd.DataFrame(
        [(key[0], key[1], int(parts["n"].sum()), d, s.tobytes(), o.reshape(-1).tobytes())],
        columns=_PARTIAL.fieldNames(),
    )


def covariance_sums(grouped: DataFrame) -> DataFrame:
    """Per (level, name): n, Σx and Σxxᵀ (float64 bytes), summed partition by partition, then per group."""
    require_columns(grouped, ["level", "name", "embedding"], "covariance_sums")
    partials = grouped.select("level", "name", "embedding").mapInPandas(_partial_sums, _PARTIAL)
    return partials.groupBy("level", "name").applyInPandas(_add_partials, _PARTIAL)


def diversity_metrics(spark: SparkSession, grouped: DataFrame, model_id: str | None = None) -> DataFrame:
    """DIVERSITY_METRICS rows; the eigen-decompositions run on the driver, one group at a time."""
    rows = []
    for row in covariance_sums(grouped).toLocalIterator():
        d, n = row["dimension"], row["n"]
        cov = covariance(
            n,
            np.frombuffer(row["vector_sum"], dtype=np.float64),
            np.frombuffer(row["outer_sum"], dtype=np.float64).reshape(d, d),
        )
        metrics = spectrum_metrics(np.linalg.eigvalsh(cov)) if n > 1 else Spectrum(0.0, 0.0, 0.0)
        rows.append(
            (
                row["level"],
                row["name"],
                n,
                d,
                metrics.effective_rank,
                metrics.participation_ratio,
                metrics.diversity_score,
                model_id,
            )
        )
    order = {"subset": 0, "category": 1, "total": 2}
    rows.sort(key=lambda r: (order.get(r[0], 3), r[1]))
    return spark.createDataFrame(rows, DIVERSITY_METRICS)
