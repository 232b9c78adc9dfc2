"""Decontamination search: FAISS against FineVision's brute-force cosine, on synthetic embeddings.

    .venv/bin/python bench/decontam.py                      # 200k training x 100k benchmark, 512-d
    .venv/bin/python bench/decontam.py --train 20000 --bench 10000

The vectors imitate SSCD embeddings of a training corpus and of benchmark test sets:
- both sets are drawn around shared centroids (benchmarks use the same kinds of images as
  training data), with skewed cluster sizes and per-cluster spread; a few tight "template"
  clusters (charts from one template) have pairwise cosine ~0.8, unrelated images ~0;
- 0.5% of benchmark rows are near copies of other benchmark rows (one image in two benchmarks);
- `--copy-rate` of the training rows are planted copies of benchmark rows: a fifth exact (1.0),
  the rest at cosine uniform in [0.96, 1.0];
- 0.5% of training rows are near misses at cosine [0.90, 0.94] (redrawn figures): not hits.

Three searches for every training vector against the benchmark set, threshold tau (>= 0.95):
1. brute force in numpy, training vectors in batches of 5,000 (FineVision's approach);
2. FAISS exact (`IndexFlatIP`, range search): must give the identical hit set;
3. FAISS IVF (`IndexIVFFlat`): timed with its build, recall of hits measured against exact.
Prints the speed-ups and the recall measured in this run; exits 1 if a target is missed
(identical exact hits; IVF >= 0.999 recall of hits; from 200k x 100k on, IVF >= 10x faster
than brute force with its build included).
"""

from __future__ import annotations

import argparse
import sys
import time

import faiss
import numpy as np

from udfs import knn

CHUNK = 20_000
FULL_SIZE = 200_000 * 100_000


def unit_rows(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def sample_clustered(
    rng: np.random.Generator, n: int, centroids: np.ndarray, spreads: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """n unit vectors: centroid + spread * isotropic noise of norm ~1, normalised (float32)."""
    dim = centroids.shape[1]
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, CHUNK):
        stop = min(n, start + CHUNK)
        labels = rng.choice(len(centroids), stop - start, p=weights)
        noise = rng.standard_normal((stop - start, dim), dtype=np.float32) / np.float32(np.sqrt(dim))
        out[start:stop] = unit_rows(centroids[labels] + spreads[labels, None] * noise)
    return out


def at_cosine(rng: np.random.Generator, originals: np.ndarray, cosines: np.ndarray) -> np.ndarray:
    """Unit vectors at exactly the given cosine to each original (noise orthogonal to it)."""
    base = originals.astype(np.float64)
    noise = rng.standard_normal(base.shape)
    noise -= np.einsum("ij,ij->i", noise, base)[:, None] * base
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    copies = cosines[:, None] * base + np.sqrt(1.0 - cosines**2)[:, None] * noise
    return unit_rows(copies).astype(np.float32)


def make_vectors(n_train: int, n_bench: int, dim: int, copy_rate: float, seed: int):
    """Training and benchmark embeddings, and the planted (train_row, bench_row) copy pairs."""
    rng = np.random.default_rng(seed)
    n_clusters = max(16, n_bench // 100)
    centroids = unit_rows(rng.standard_normal((n_clusters, dim)).astype(np.float32))
    spreads = rng.uniform(0.7, 1.4, n_clusters).astype(np.float32)
    spreads[rng.random(n_clusters) < 0.05] = 0.5  # template-like clusters
    weights = 1.0 / np.arange(1, n_clusters + 1) ** 0.7
    weights = rng.permutation(weights / weights.sum())

    bench = sample_clustered(rng, n_bench, centroids, spreads, weights)
    n_dup = n_bench // 200
    dup_rows = rng.choice(n_bench, 2 * n_dup, replace=False)
    bench[dup_rows[:n_dup]] = at_cosine(rng, bench[dup_rows[n_dup:]], rng.uniform(0.97, 1.0, n_dup))

    train = sample_clustered(rng, n_train, centroids, spreads, weights)
    n_copies, n_misses = int(n_train * copy_rate), n_train // 200
    rows = rng.choice(n_train, n_copies + n_misses, replace=False)
    copy_rows, miss_rows = rows[:n_copies], rows[n_copies:]
    sources = rng.choice(n_bench, n_copies)
    cosines = rng.uniform(0.96, 1.0, n_copies)
    exact = rng.random(n_copies) < 0.2
    train[copy_rows] = at_cosine(rng, bench[sources], cosines)
    train[copy_rows[exact]] = bench[sources[exact]]
    train[miss_rows] = at_cosine(rng, bench[rng.choice(n_bench, n_misses)], rng.uniform(0.90, 0.94, n_misses))
    return train, bench, np.stack([copy_rows, sources], axis=1)


def brute_force_hits(train: np.ndarray, bench: np.ndarray, tau: float, batch: int) -> knn.Hits:
    """FineVision's way: cosine of every training batch against all benchmark vectors."""
    tau32 = np.float32(tau)
    parts = []
    for start in range(0, len(train), batch):
        sims = train[start : start + batch] @ bench.T
        q, i = np.nonzero(sims >= tau32)
        parts.append((q.astype(np.int64) + start, i.astype(np.int64), sims[q, i]))
        del sims
    return knn.Hits(*(np.concatenate(column) for column in zip(*parts, strict=False)))


def pair_keys(hits: knn.Hits, n_bench: int) -> np.ndarray:
    return np.sort(hits.query_rows * n_bench + hits.index_rows)


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=int, default=200_000, help="training vectors")
    parser.add_argument("--bench", type=int, default=100_000, help="benchmark vectors")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--tau", type=float, default=0.95)
    parser.add_argument("--batch", type=int, default=5_000, help="brute-force batch (FineVision: 5,000)")
    parser.add_argument(
        "--copy-rate", type=float, default=0.01, help="share of training rows that copy a benchmark row"
    )
    parser.add_argument("--nlist", type=int, default=None, help="IVF lists (default ~2 sqrt(bench))")
    parser.add_argument("--nprobe", type=int, default=8, help="IVF lists scanned per query")
    parser.add_argument(
        "--ivf-scan",
        choices=["gemm", "faiss"],
        default="gemm",
        help="IVF list scan: one matrix product per list, or FAISS's range search",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    print(f"threads: faiss {faiss.omp_get_max_threads()}; faiss {faiss.__version__}, numpy {np.__version__}")
    (train, bench, planted), t_gen = timed(make_vectors, args.train, args.bench, args.dim, args.copy_rate, args.seed)
    print(
        f"data: {args.train:,} training x {args.bench:,} benchmark vectors, {args.dim}-d, "
        f"{len(planted):,} planted copies, tau {args.tau} (generated in {t_gen:.1f} s)"
    )

    brute, t_brute = timed(brute_force_hits, train, bench, args.tau, args.batch)
    print(f"brute force numpy (batches of {args.batch:,}): {t_brute:8.2f} s, {len(brute.query_rows):,} hits")

    exact_index, t_exact_build = timed(knn.build_index, bench, "exact")
    exact, t_exact_search = timed(knn.search_threshold_arrays, exact_index, train, args.tau)
    t_exact = t_exact_build + t_exact_search
    brute_keys, exact_keys = pair_keys(brute, args.bench), pair_keys(exact, args.bench)
    identical = np.array_equal(brute_keys, exact_keys)
    print(
        f"faiss exact (IndexFlatIP, range search): {t_exact:8.2f} s, {len(exact.query_rows):,} hits, "
        f"identical to brute force: {identical}"
    )
    if not identical:
        only_brute = np.setdiff1d(brute_keys, exact_keys)
        only_faiss = np.setdiff1d(exact_keys, brute_keys)
        print(f"  only brute force: {len(only_brute)}, only faiss: {len(only_faiss)}")

    planted_keys = planted[:, 0] * args.bench + planted[:, 1]
    found = np.isin(planted_keys, exact_keys).mean() if len(planted_keys) else 1.0
    print(f"planted copies found by exact search: {found:.4f}")

    nlist = args.nlist or knn.default_nlist(args.bench)
    ivf_index, t_ivf_build = timed(knn.build_index, bench, "ivf", nlist=nlist, nprobe=args.nprobe)
    ivf, t_ivf_search = timed(knn.search_threshold_arrays, ivf_index, train, args.tau, ivf_scan=args.ivf_scan)
    t_ivf = t_ivf_build + t_ivf_search
    recall = knn.hit_recall(ivf, exact)
    false_hits = len(np.setdiff1d(pair_keys(ivf, args.bench), exact_keys))
    print(
        f"faiss IVF (nlist {nlist}, nprobe {ivf_index.nprobe}, {args.ivf_scan} scan): build {t_ivf_build:.2f} s + search "
        f"{t_ivf_search:.2f} s = {t_ivf:.2f} s, {len(ivf.query_rows):,} hits, {false_hits} not in exact"
    )

    speedup = t_brute / t_ivf
    print()
    print(f"exact vs brute force: identical hit sets = {identical}, speed-up {t_brute / t_exact:.2f}x")
    print(f"IVF speed-up over brute force: {speedup:.1f}x with build, {t_brute / t_ivf_search:.1f}x search only")
    print(f"IVF recall of hits vs exact:   {recall:.5f}")
    ok = identical and recall >= 0.999
    if args.train * args.bench >= FULL_SIZE:
        ok = ok and speedup >= 10
        print("targets (identical exact hits; IVF >= 10x at >= 0.999 recall):", "MET" if ok else "MISSED")
    else:  # brute force grows with train x bench, IVF about with train x sqrt(bench)
        print(
            "targets (identical exact hits; IVF >= 0.999 recall):",
            "MET" if ok else "MISSED",
            "- the 10x speed-up target applies from 200k x 100k",
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
