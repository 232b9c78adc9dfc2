"""FAISS indexes over L2-normalised embeddings: build, ship, search by similarity threshold.

Vectors are float32, unit rows, so cosine similarity = inner product and every index here uses
`METRIC_INNER_PRODUCT`. Used for decontamination (index = benchmark embeddings, queries =
training embeddings) and near-duplicate self-search (index = queries = training embeddings;
the caller drops the self pairs).

Shipping to Spark executors: `serialize_index` gives bytes for a broadcast (or a file for
multi-GB indexes); in the UDF, `cached_index(lambda: broadcast.value, key=fingerprint)` turns
them back into an index once per Python worker. Compute `index_fingerprint(data)` once on the
driver and pass it as `key` so executors do not rehash the bytes for every Arrow batch.

Index kinds:
- `exact`: `IndexFlatIP`, brute force with BLAS; the default and the reference for recall.
- `ivf`: `IndexIVFFlat` (spherical k-means coarse quantiser, exact vectors in the lists);
  approximate only in which lists are scanned (`nprobe`). For a batch of queries,
  `search_threshold` scans each probed list once with a matrix product over all the queries
  that probe it (FAISS's own IVF search goes one query at a time; selectable).
- `hnsw`: `IndexHNSWFlat`; approximate graph search (`ef_search`), no training.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Literal, NamedTuple

import faiss
import numpy as np
import pyarrow as pa

IndexKind = Literal["exact", "ivf", "hnsw"]
UNIT_NORM_TOLERANCE = 1e-3


class Hits(NamedTuple):
    """Threshold-search results as parallel arrays, one entry per pair, sorted by query row
    then index row."""

    query_rows: np.ndarray  # int64
    index_rows: np.ndarray  # int64
    similarities: np.ndarray  # float32

    def as_list(self) -> list[tuple[int, int, float]]:
        return list(zip(self.query_rows.tolist(), self.index_rows.tolist(), self.similarities.tolist(), strict=False))


# ---------------------------------------------------------------------------------------------
# Building


def as_unit_vectors(vectors: np.ndarray, name: str = "vectors") -> np.ndarray:
    """Check `vectors` are finite, 2-D, unit rows; return them as C-contiguous float32.

    NaN rows (images that failed to embed) must be dropped before indexing or searching.
    """
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array, got shape {x.shape}")
    if x.size and not np.isfinite(x).all():
        raise ValueError(f"{name}: contains NaN or infinite values (drop failed embeddings first)")
    if len(x):
        norms = np.linalg.norm(x, axis=1)
        worst = float(np.abs(norms - 1.0).max())
        if worst > UNIT_NORM_TOLERANCE:
            raise ValueError(f"{name}: rows must be L2-normalised (max |norm - 1| = {worst:.3g})")
    return x


def default_nlist(n: int) -> int:
    """IVF list count: about 2 sqrt(n), at most n / 39 so that k-means has 39 points a list.

    Scanning costs ~ nprobe n / nlist a query and choosing the lists ~ nlist, so nlist ~
    sqrt(nprobe n) minimises search; k-means (build) costs ~ nlist^2, which favours the low end.
    """
    return max(1, min(int(2 * math.sqrt(n)), n // 39))


def build_index(
    vectors: np.ndarray,
    kind: IndexKind = "exact",
    nlist: int | None = None,
    nprobe: int = 8,
    hnsw_m: int = 32,
    ef_construction: int = 80,
    ef_search: int = 128,
    kmeans_iters: int = 10,
    train_per_list: int = 40,
    seed: int = 1234,
) -> faiss.Index:
    """An inner-product index holding `vectors` (unit rows) in their row order.

    ivf: `nlist` lists (default `default_nlist(n)`), trained on the vectors themselves;
    `nprobe` lists scanned per query (8 keeps all copies at tau 0.95 in the benchmarks here;
    check with `hit_recall` on real data); spherical k-means runs `kmeans_iters` iterations (FAISS's default is 25) on a random sample
    of `train_per_list` x nlist vectors (FAISS asks for at least 39 a list): the lists only have
    to be good enough for `nprobe` to reach the neighbours, and k-means dominates the build.
    hnsw: `hnsw_m` links a node, `ef_construction` / `ef_search` beam widths.
    `nprobe` and `ef_search` are stored in the index and survive serialisation.
    """
    x = as_unit_vectors(vectors)
    n, dim = x.shape
    if kind == "exact":
        index: faiss.Index = faiss.IndexFlatIP(dim)
    elif kind == "ivf":
        if n == 0:
            raise ValueError("an IVF index needs vectors to train on")
        nlist = nlist or default_nlist(n)
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        index.cp.niter = kmeans_iters
        index.cp.min_points_per_centroid = min(39, train_per_list)
        sample_size = min(n, train_per_list * nlist)
        sample = x if sample_size == n else x[np.random.default_rng(seed).choice(n, sample_size, replace=False)]
        index.train(sample)
        index.nprobe = min(nlist, nprobe)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
        index.hnsw.efSearch = ef_search
    else:
        raise ValueError(f"kind must be 'exact', 'ivf' or 'hnsw', not {kind!r}")
    if n:
        index.add(x)
    return index


# ---------------------------------------------------------------------------------------------
# Shipping


def serialize_index(index: faiss.Index) -> bytes:
    """The index as bytes (for a broadcast or a file)."""
    return faiss.serialize_index(index).tobytes()


def deserialize_index(data: bytes | bytearray | memoryview | np.ndarray) -> faiss.Index:
    """The inverse of `serialize_index`."""
    return faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))


def index_fingerprint(data: bytes | bytearray | memoryview) -> str:
    """A content hash of serialised index bytes: the key of the per-worker cache."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


_INDEXES: OrderedDict[str, faiss.Index] = OrderedDict()
_INDEXES_LOCK = threading.Lock()
MAX_CACHED_INDEXES = 2


def cached_index(
    source: bytes | Callable[[], bytes | faiss.Index],
    key: str | None = None,
) -> faiss.Index:
    """The index for `source`, deserialised at most once per worker process.

    `source` is serialised bytes, or a callable returning bytes or an index (e.g.
    `lambda: broadcast.value` or a file reader), called only on a cache miss. `key` identifies
    the content; by default the bytes' fingerprint (a callable source needs an explicit key).
    The cache keeps the `MAX_CACHED_INDEXES` most recently used indexes, so a reused worker does
    not accumulate indexes of earlier runs. FAISS searches are thread-safe on a shared index.
    """
    if key is None:
        if callable(source):
            raise ValueError("cached_index needs a key when the source is a callable")
        key = index_fingerprint(source)
    with _INDEXES_LOCK:
        index = _INDEXES.get(key)
        if index is not None:
            _INDEXES.move_to_end(key)
            return index
        data = source() if callable(source) else source
        index = data if isinstance(data, faiss.Index) else deserialize_index(data)
        _INDEXES[key] = index
        while len(_INDEXES) > MAX_CACHED_INDEXES:
            _INDEXES.popitem(last=False)
        return index


def clear_index_cache() -> None:
    with _INDEXES_LOCK:
        _INDEXES.clear()


# ---------------------------------------------------------------------------------------------
# Searching


def supports_range_search(index: faiss.Index) -> bool:
    """Whether `search_threshold` returns every neighbour >= tau of what it scans (flat and IVF
    indexes) rather than at most k (anything else).

    HNSW's range search is bounded by its beam like its kNN search, so for it (and for other
    kinds, e.g. GPU indexes) `search_threshold` uses kNN with k and filters, whose truncation
    at k is explicit.
    """
    return isinstance(index, (faiss.IndexFlat, faiss.IndexIVF))


def _ivf_flat_lists(index: faiss.Index) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """(vectors [n, d] float32, ids [n]) views of each list of an in-memory inner-product
    IndexIVFFlat (no copy: valid while the index lives), or None for any other index."""
    if not isinstance(index, faiss.IndexIVFFlat) or index.metric_type != faiss.METRIC_INNER_PRODUCT:
        return None
    lists = faiss.downcast_InvertedLists(index.invlists)  # type: ignore[arg-type]  # never None on a built index
    if not isinstance(lists, faiss.ArrayInvertedLists):
        return None
    out = []
    for list_no in range(index.nlist):
        size = lists.list_size(list_no)
        if size == 0:
            out.append((np.empty((0, index.d), np.float32), np.empty(0, np.int64)))
            continue
        codes = faiss.rev_swig_ptr(lists.get_codes(list_no), size * index.code_size)
        ids = faiss.rev_swig_ptr(lists.get_ids(list_no), size)
        out.append((codes.view(np.float32).reshape(size, index.d), ids.view(np.int64)))
    return out


def _single_threaded_blas() -> contextlib.AbstractContextManager:
    """Numpy's BLAS on one thread (the per-list products are small: a multi-threaded BLAS spends
    more time waking its threads than multiplying, badly so on a busy machine). Needs
    threadpoolctl; without it, a no-op."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _ivf_gemm_search(
    index: faiss.IndexIVFFlat, lists: list[tuple[np.ndarray, np.ndarray]], batch: np.ndarray, tau: np.float32
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Threshold search of an IVF-flat index, one matrix product per probed list.

    Same semantics as FAISS's IVF range search (all vectors >= tau in the `nprobe` lists
    nearest each query), but each list is compared once with all the queries of the batch that
    probe it, as one BLAS product, instead of one dot product at a time.
    """
    nprobe = min(index.nprobe, index.nlist)
    _, probes = index.quantizer.search(batch, nprobe)
    flat_lists = probes.ravel()
    flat_queries = np.repeat(np.arange(len(batch), dtype=np.int64), nprobe)
    valid = flat_lists >= 0
    flat_lists, flat_queries = flat_lists[valid], flat_queries[valid]
    order = np.argsort(flat_lists, kind="stable")
    flat_lists, flat_queries = flat_lists[order], flat_queries[order]
    bounds = np.searchsorted(flat_lists, np.arange(index.nlist + 1))
    parts = []
    with _single_threaded_blas():
        for list_no in np.flatnonzero(np.diff(bounds)):
            vectors, ids = lists[list_no]
            if not len(ids):
                continue
            rows = flat_queries[bounds[list_no] : bounds[list_no + 1]]
            sims = batch[rows] @ vectors.T
            q, j = np.nonzero(sims >= tau)
            if len(q):
                parts.append((rows[q], ids[j], sims[q, j]))
    if not parts:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32)
    rows, ids, sims = (np.concatenate(column) for column in zip(*parts, strict=False))
    return rows, ids, sims


def search_threshold_arrays(
    index: faiss.Index,
    queries: np.ndarray,
    tau: float = 0.95,
    k: int = 16,
    query_batch: int = 16384,
    ivf_scan: Literal["gemm", "faiss"] = "gemm",
) -> Hits:
    """All (query row, index row, similarity) with similarity >= tau (inclusive), sorted by
    query row then index row.

    - Flat indexes: FAISS range search, so every neighbour at or above tau is returned however
      many (FAISS keeps similarities strictly above its radius, so the radius is the float32
      just below tau and the results are then filtered with `>= tau`).
    - IVF indexes: every vector >= tau in the `nprobe` lists nearest each query. With
      `ivf_scan="gemm"` (in-memory IVF-flat) each probed list is compared with all the batch's
      queries that probe it in one matrix product; `"faiss"` uses FAISS's range search, which
      scans one query at a time (several times slower on large batches; same hits up to float
      rounding). Batches of many queries, as in a pandas UDF, are where gemm pays off.
    - Other indexes (HNSW): kNN with `k` neighbours, filtered; a query with more than k
      neighbours above tau loses the weakest ones.
    IVF and HNSW are approximate: measure them against the exact index with `hit_recall`.
    """
    q = as_unit_vectors(queries, "queries")
    if q.shape[1] != index.d:
        raise ValueError(f"queries have dimension {q.shape[1]}, the index {index.d}")
    tau32 = np.float32(tau)
    radius = float(np.nextafter(tau32, np.float32(-np.inf)))
    lists = _ivf_flat_lists(index) if ivf_scan == "gemm" else None
    use_range = supports_range_search(index)
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for start in range(0, len(q), query_batch):
        batch = q[start : start + query_batch]
        if lists is not None and isinstance(index, faiss.IndexIVFFlat):  # lists exist only for IVF-flat
            rows, ids, sims = _ivf_gemm_search(index, lists, batch, tau32)
        elif use_range:
            lims, sims, ids = index.range_search(batch, radius)
            rows = np.repeat(np.arange(len(batch), dtype=np.int64), np.diff(lims).astype(np.int64))
        else:
            sims_knn, ids_knn = index.search(batch, min(k, max(index.ntotal, 1)))
            rows = np.repeat(np.arange(len(batch), dtype=np.int64), sims_knn.shape[1])
            sims, ids = sims_knn.ravel(), ids_knn.ravel()
        keep = (sims >= tau32) & (ids >= 0)
        parts.append((rows[keep] + start, ids[keep].astype(np.int64), sims[keep].astype(np.float32)))
    if not parts:
        empty = np.empty(0, np.int64)
        return Hits(empty, empty.copy(), np.empty(0, np.float32))
    rows, ids, sims = (np.concatenate(column) for column in zip(*parts, strict=False))
    order = np.lexsort((ids, rows))
    return Hits(rows[order], ids[order], sims[order])


def search_threshold(
    index: faiss.Index, queries: np.ndarray, tau: float = 0.95, k: int = 16
) -> list[tuple[int, int, float]]:
    """`search_threshold_arrays` as a list of (query_row, index_row, similarity) tuples."""
    return search_threshold_arrays(index, queries, tau, k).as_list()


def _pair_set(hits: Hits | Iterable[tuple]) -> set[tuple[int, int]]:
    if isinstance(hits, Hits):
        return set(zip(hits.query_rows.tolist(), hits.index_rows.tolist(), strict=False))
    return {(int(h[0]), int(h[1])) for h in hits}


def hit_recall(approx_hits: Hits | Iterable[tuple], exact_hits: Hits | Iterable[tuple]) -> float:
    """Share of the exact (query_row, index_row) pairs that the approximate search also found.

    1.0 when there are no exact hits. Similarities are ignored.
    """
    exact = _pair_set(exact_hits)
    if not exact:
        return 1.0
    return len(exact & _pair_set(approx_hits)) / len(exact)


def vectors_from_arrow(table: pa.Table, column: str = "embedding") -> np.ndarray:
    """float32 [rows, dim] from an Arrow list column of equal-length vectors (as `DataFrame.toArrow()`
    gathers them), without a Python object per vector."""
    values = table.column(column).combine_chunks()
    if len(values) == 0:
        return np.empty((0, 0), np.float32)
    lengths = np.diff(values.offsets.to_numpy())
    if values.null_count or (lengths != lengths[0]).any():
        raise ValueError(f"{column}: every vector must be present and of one length")
    return values.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(values), int(lengths[0]))


# ---------------------------------------------------------------------------------------------
# Score normalisation: does a pair stand out from the query's background?


def copy_groups(vectors: np.ndarray, threshold: float) -> np.ndarray:
    """A group label per indexed vector: vectors linked by a chain of pairs at cosine >= threshold
    (near-duplicates: one photograph re-encoded into several benchmark items) share a label, the
    smallest row of the group. Exact search over the (bounded) indexed side."""
    x = as_unit_vectors(vectors, "vectors")
    parent = np.arange(len(x))
    if not len(x):
        return parent
    hits = search_threshold_arrays(build_index(x), x, tau=threshold)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = int(parent[i])
        return i

    for a, b in zip(hits.query_rows.tolist(), hits.index_rows.tolist(), strict=True):
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return np.array([root(i) for i in range(len(x))], dtype=np.int64)


def standout_scores(
    queries: np.ndarray,
    index_rows: np.ndarray,
    similarities: np.ndarray,
    groups: np.ndarray,
    threshold: float,
    floor: float,
    neighbours: int,
    weight: float,
) -> np.ndarray:
    """The normalised score of each pair of a threshold search (every pair of a query >= `floor`;
    +inf at or above `threshold`, where no normalisation applies):

        s(q, r) - weight * mean(the query's `neighbours` best similarities to other groups),

    SSCD's score normalisation (Pizzi et al., CVPR 2022, eq. 8; the reference code's default
    `1.0[0,2]`: weight 1, the mean of the 3 nearest background neighbours), with the indexed side
    other than r as the background. An indexed vector's group (`copy_groups`) is never background
    to its own members, so a copy of a photograph re-encoded into five benchmark items is not
    measured against those items. A same-template look-alike is about as close to many indexed
    siblings as to r (score near 0); a copy stands out. Background similarities below `floor` were
    not returned by the search and count as `floor` (an upper bound: the score is at worst a little
    lower than the truth, never higher). With `neighbours` 0 every score is +inf (no filter)."""
    scores = np.full(len(similarities), np.inf, np.float32)
    below = np.flatnonzero(similarities < np.float32(threshold))
    if not len(below) or neighbours <= 0:
        return scores
    group_of = groups[index_rows]
    # per (query, group): the best similarity; then each query's groups by similarity, descending
    order = np.lexsort((-similarities, group_of, queries))
    q, g, s = queries[order], group_of[order], similarities[order]
    first = np.ones(len(order), bool)
    first[1:] = (q[1:] != q[:-1]) | (g[1:] != g[:-1])
    gq, gg, gs = q[first], g[first], s[first]
    by_score = np.lexsort((-gs, gq))
    gq, gg, gs = gq[by_score], gg[by_score], gs[by_score]
    rank = np.arange(len(gq)) - np.searchsorted(gq, gq, side="left")
    # the best `neighbours + 1` groups of each query leave `neighbours` others whatever r's group
    top = rank <= neighbours
    unique_q, slot = np.unique(gq[top], return_inverse=True)
    table_s = np.full((len(unique_q), neighbours + 1), np.float32(floor), np.float32)
    table_g = np.full((len(unique_q), neighbours + 1), -1, np.int64)
    table_s[slot, rank[top]] = gs[top]
    table_g[slot, rank[top]] = gg[top]
    row = np.searchsorted(unique_q, queries[below])
    others = np.where(table_g[row] == group_of[below][:, None], -np.inf, table_s[row])
    background = np.sort(others, axis=1)[:, ::-1][:, :neighbours].mean(axis=1)
    scores[below] = similarities[below] - np.float32(weight) * background.astype(np.float32)
    return scores
