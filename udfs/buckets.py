"""k-means buckets for the near-duplicate self-join, and the exact comparison inside a bucket:
numpy in, numpy out, run on executors by `etl.stages.dedup` (tested without Spark).

A vector goes to the buckets of its `probes` nearest centroids; a pair of vectors is compared in
every bucket the two share and reported only in the smallest of them, so that comparing every
bucket yields each pair once. Similarities are computed a block of rows at a time, at most
`BLOCK_ELEMENTS` of them at once.
"""

from __future__ import annotations

import math

import numpy as np

TARGET_BUCKET_SIZE = 10_000  # vectors a bucket when n_buckets is not given
MIN_TRAIN_PER_BUCKET = 39  # FAISS's minimum of k-means points a centroid
BLOCK_ELEMENTS = 1 << 23  # similarities computed at once in a bucket (32 MiB of float32)
MAX_BUCKETS = 512  # k-means buckets at most when n_buckets is not given (dedup.max_buckets)


def default_n_buckets(n: int, max_train_vectors: int, max_buckets: int = MAX_BUCKETS) -> int:
    """About `TARGET_BUCKET_SIZE` vectors a bucket, at most `max_buckets`, with enough training
    points a centroid."""
    return max(1, min(math.ceil(n / TARGET_BUCKET_SIZE), max_buckets, max_train_vectors // MIN_TRAIN_PER_BUCKET))


def train_bucket_centroids(sample: np.ndarray, n_buckets: int, seed: int = 0, niter: int = 20) -> np.ndarray:
    """`n_buckets` unit centroids [n_buckets, dim] float32 by spherical k-means on `sample`
    (unit rows; needs at least n_buckets of them)."""
    x = np.ascontiguousarray(sample, dtype=np.float32)
    if len(x) < n_buckets:
        raise ValueError(f"k-means needs at least {n_buckets} sample vectors, got {len(x)}")
    import faiss

    kmeans = faiss.Kmeans(
        x.shape[1],
        n_buckets,
        niter=niter,
        seed=seed,
        spherical=True,
        verbose=False,
        min_points_per_centroid=1,
        max_points_per_centroid=max(256, math.ceil(len(x) / n_buckets)),
    )
    kmeans.train(x)
    return np.ascontiguousarray(kmeans.centroids, dtype=np.float32)


def nearest_buckets(vectors: np.ndarray, centroids: np.ndarray, probes: int) -> np.ndarray:
    """[n, probes] int32: the buckets of each vector's `probes` most similar centroids, nearest
    first."""
    probes = min(probes, len(centroids))
    sims = np.asarray(vectors, dtype=np.float32) @ centroids.T
    top = (
        np.argpartition(-sims, probes - 1, axis=1)[:, :probes]
        if probes < len(centroids)
        else np.tile(np.arange(len(centroids)), (len(sims), 1))
    )
    order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1).astype(np.int32)


def pairs_within_bucket(
    ids: np.ndarray,
    vectors: np.ndarray,
    buckets: np.ndarray,
    bucket: int,
    threshold: float,
    block_elements: int = BLOCK_ELEMENTS,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs of one bucket with inner product >= threshold: (ids_a, ids_b, similarities), ids_a
    < ids_b.

    `ids` [m] strings, `vectors` [m, dim], `buckets` [m, probes] the buckets of each vector.
    A pair is reported only in the smallest bucket its two vectors share, so that running this
    for every bucket yields each pair once. Similarities are computed a block of rows at a time
    (at most `block_elements` of them at once), comparing each row with the rows after it in id
    order only.
    """
    order = np.argsort(ids, kind="stable")
    ids, x, buckets = ids[order], np.asarray(vectors, dtype=np.float32)[order], np.asarray(buckets)[order]
    m, tau = len(ids), np.float32(threshold)
    block = max(1, block_elements // max(m, 1))
    parts = []
    for start in range(0, m, block):
        stop = min(m, start + block)
        sims = x[start:stop] @ x[start:].T  # row r is start + r; column c is start + c
        rows, cols = np.nonzero(sims >= tau)
        keep = cols > rows
        rows, cols = rows[keep], cols[keep]
        if len(rows):
            parts.append((rows + start, cols + start, sims[rows, cols]))
    if not parts:
        return np.empty(0, object), np.empty(0, object), np.empty(0, np.float32)
    a, b, s = (np.concatenate(column) for column in zip(*parts, strict=False))
    keep = _first_shared_bucket(buckets[a], buckets[b], bucket) & (ids[a] != ids[b])
    return ids[a][keep], ids[b][keep], s[keep].astype(np.float32)


def pairs_across(
    ids_a: np.ndarray,
    vectors_a: np.ndarray,
    buckets_a: np.ndarray,
    ids_b: np.ndarray,
    vectors_b: np.ndarray,
    buckets_b: np.ndarray,
    bucket: int,
    threshold: float,
    block_elements: int = BLOCK_ELEMENTS,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`pairs_within_bucket` for pairs with one vector on each side (two parts of a split bucket):
    (ids_lo, ids_hi, similarities), ids_lo < ids_hi, each pair once if the sides share no id."""
    xa, xb = np.asarray(vectors_a, dtype=np.float32), np.asarray(vectors_b, dtype=np.float32)
    tau = np.float32(threshold)
    block = max(1, block_elements // max(len(ids_b), 1))
    parts = []
    for start in range(0, len(ids_a), block):
        sims = xa[start : start + block] @ xb.T
        rows, cols = np.nonzero(sims >= tau)
        if len(rows):
            parts.append((rows + start, cols, sims[rows, cols]))
    if not parts:
        return np.empty(0, object), np.empty(0, object), np.empty(0, np.float32)
    a, b, s = (np.concatenate(column) for column in zip(*parts, strict=False))
    keep = _first_shared_bucket(np.asarray(buckets_a)[a], np.asarray(buckets_b)[b], bucket) & (ids_a[a] != ids_b[b])
    first, second = ids_a[a][keep], ids_b[b][keep]
    ordered = first < second
    return np.where(ordered, first, second), np.where(ordered, second, first), s[keep].astype(np.float32)


def _first_shared_bucket(buckets_a: np.ndarray, buckets_b: np.ndarray, bucket: int) -> np.ndarray:
    """[n] bool: whether `bucket` is the smallest bucket that row i of each side shares (so that a
    pair found in several buckets is reported in one)."""
    shared_earlier = (buckets_a[:, :, None] == buckets_b[:, None, :]) & (buckets_a[:, :, None] < bucket)
    return ~shared_earlier.any(axis=(1, 2))
