"""FAISS threshold search checked against brute-force numpy on clustered data with planted copies."""

from __future__ import annotations

import numpy as np
import pytest

from udfs import knn

TAU = 0.95


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def clustered(rng: np.random.Generator, n: int, centroids: np.ndarray, spread: float) -> np.ndarray:
    """Unit vectors around random centroids (pairwise cosine in a cluster ~ 1 / (1 + spread^2))."""
    labels = rng.integers(0, len(centroids), n)
    noise = rng.standard_normal((n, centroids.shape[1])) / np.sqrt(centroids.shape[1])
    return unit(centroids[labels] + spread * noise)


def near_copies(rng: np.random.Generator, originals: np.ndarray, low: float, high: float) -> np.ndarray:
    """For each original, a unit vector at a cosine drawn uniformly from [low, high]."""
    cosine = rng.uniform(low, high, len(originals))
    noise = rng.standard_normal(originals.shape)
    noise -= np.einsum("ij,ij->i", noise, originals)[:, None] * originals  # orthogonal to the original
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    return unit(cosine[:, None] * originals + np.sqrt(1 - cosine**2)[:, None] * noise)


@pytest.fixture(scope="module")
def corpus():
    """A benchmark set and a training set from shared clusters; 300 training rows copy benchmark rows."""
    rng = np.random.default_rng(7)
    dim = 128
    centroids = unit(rng.standard_normal((40, dim)))
    bench = clustered(rng, 3000, centroids, spread=0.8)
    train = clustered(rng, 5000, centroids, spread=0.8)
    copied = rng.choice(len(bench), 300, replace=False)
    planted_rows = rng.choice(len(train), 300, replace=False)
    train[planted_rows] = near_copies(rng, bench[copied], 0.93, 1.0)  # some just below tau
    return train, bench


def brute_force_pairs(queries: np.ndarray, base: np.ndarray, tau: float) -> set[tuple[int, int]]:
    sims = queries.astype(np.float64) @ base.astype(np.float64).T
    return set(zip(*(axis.tolist() for axis in np.nonzero(sims >= tau)), strict=False))


def pairs(hits: knn.Hits) -> set[tuple[int, int]]:
    return set(zip(hits.query_rows.tolist(), hits.index_rows.tolist(), strict=False))


def test_exact_index_finds_exactly_the_brute_force_hits(corpus):
    train, bench = corpus
    sims = train.astype(np.float64) @ bench.astype(np.float64).T
    assert not (np.abs(sims - TAU) < 1e-5).any(), "data too close to tau to compare float32 with float64"
    expected = brute_force_pairs(train, bench, TAU)
    assert 150 < len(expected) < 300  # the planted copies above tau, and nothing else

    hits = knn.search_threshold_arrays(knn.build_index(bench, "exact"), train, TAU)
    assert pairs(hits) == expected
    np.testing.assert_allclose(hits.similarities, sims[hits.query_rows, hits.index_rows], atol=1e-5)
    as_list = knn.search_threshold(knn.build_index(bench, "exact"), train, TAU)
    assert {(q, i) for q, i, _ in as_list} == expected


def test_ivf_recall_of_hits_against_exact(corpus):
    train, bench = corpus
    exact = knn.search_threshold_arrays(knn.build_index(bench, "exact"), train, TAU)
    ivf = knn.build_index(bench, "ivf", nlist=64, nprobe=8)
    assert ivf.nlist == 64 and ivf.nprobe == 8
    approx = knn.search_threshold_arrays(ivf, train, TAU)
    assert knn.hit_recall(approx, exact) >= 0.99
    assert pairs(approx) <= pairs(exact)  # the lists hold exact vectors: no false hits


def test_hnsw_recall_of_hits_against_exact(corpus):
    train, bench = corpus
    exact = knn.search_threshold_arrays(knn.build_index(bench, "exact"), train, TAU)
    approx = knn.search_threshold_arrays(knn.build_index(bench, "hnsw", hnsw_m=16, ef_search=64), train, TAU, k=8)
    assert knn.hit_recall(approx, exact) >= 0.99
    assert pairs(approx) <= pairs(exact)


@pytest.mark.parametrize("kind", ["exact", "ivf", "hnsw"])
def test_serialize_round_trip_gives_identical_results(corpus, kind):
    train, bench = corpus
    index = knn.build_index(bench, kind, nlist=32, nprobe=4)
    data = knn.serialize_index(index)
    assert isinstance(data, bytes)
    restored = knn.deserialize_index(data)
    assert restored.ntotal == len(bench)
    before = knn.search_threshold_arrays(index, train, 0.9)
    after = knn.search_threshold_arrays(restored, train, 0.9)
    for a, b in zip(before, after, strict=False):
        np.testing.assert_array_equal(a, b)


def test_cached_index_deserialises_once_per_content(corpus):
    _, bench = corpus
    knn.clear_index_cache()
    data = knn.serialize_index(knn.build_index(bench[:100]))
    first = knn.cached_index(data)
    assert knn.cached_index(bytes(data)) is first  # same content, another bytes object
    calls = []

    def load() -> bytes:
        calls.append(1)
        return data

    key = knn.index_fingerprint(data) + "-file"
    assert knn.cached_index(load, key=key) is knn.cached_index(load, key=key)
    assert len(calls) == 1
    other = knn.cached_index(knn.serialize_index(knn.build_index(bench[:50])))
    assert other.ntotal == 50 and first.ntotal == 100
    with pytest.raises(ValueError):
        knn.cached_index(load)


def threshold_fixture() -> tuple[np.ndarray, np.ndarray]:
    """One base vector e0; queries at cosine exactly 0.5, 0.75, 1.0 and -1 (exact in float32)."""
    base = np.zeros((1, 8), np.float32)
    base[0, 0] = 1.0
    cosines = np.array([0.5, 0.75, 1.0, -1.0], np.float32)
    queries = np.zeros((4, 8), np.float32)
    queries[:, 0] = cosines
    queries[:, 1] = np.sqrt(1 - cosines.astype(np.float64) ** 2)
    return base, unit(queries)


@pytest.mark.parametrize("kind", ["exact", "ivf", "hnsw"])
def test_threshold_is_inclusive(kind):
    base, queries = threshold_fixture()
    sims = (queries @ base.T).ravel()
    index = knn.build_index(base, kind, nlist=1, nprobe=1)
    for tau in (0.5, 0.75, 1.0):
        tau32 = np.float32(tau)
        expected = {(int(q), 0) for q in np.flatnonzero(sims >= tau32)}
        assert expected and pairs(knn.search_threshold_arrays(index, queries, tau)) == expected
    just_above = float(np.nextafter(np.float32(0.75), np.float32(2)))
    assert pairs(knn.search_threshold_arrays(index, queries, just_above)) == {
        (int(q), 0) for q in np.flatnonzero(sims >= just_above)
    }


def test_range_search_is_not_truncated_at_k_but_knn_is():
    rng = np.random.default_rng(3)
    base = near_copies(rng, np.repeat(unit(rng.standard_normal((1, 32))), 40, axis=0), 0.99, 1.0)
    exact = knn.search_threshold_arrays(knn.build_index(base, "exact"), base[:1], 0.9, k=5)
    assert len(exact.query_rows) == int((base @ base[0] >= np.float32(0.9)).sum()) == 40
    hnsw = knn.search_threshold_arrays(knn.build_index(base, "hnsw"), base[:1], 0.9, k=5)
    assert len(hnsw.query_rows) == 5


def test_hit_recall():
    exact = [(0, 1, 0.99), (2, 3, 0.97), (4, 5, 0.96), (6, 7, 1.0)]
    assert knn.hit_recall([(0, 1, 0.99), (4, 5, 0.96), (9, 9, 0.95)], exact) == 0.5
    assert knn.hit_recall([], []) == 1.0
    assert knn.hit_recall([], exact) == 0.0


def test_rejects_vectors_that_are_not_unit_or_finite():
    good = unit(np.random.default_rng(0).standard_normal((4, 8)))
    with pytest.raises(ValueError):
        knn.build_index(good * 2)
    bad = good.copy()
    bad[1] = np.nan
    with pytest.raises(ValueError):
        knn.search_threshold_arrays(knn.build_index(good), bad, 0.5)
