"""Recall and false hits of decontamination on the labelled set of edited benchmark copies
(`bench/decontam_labelled.py`):

    .venv/bin/python bench/decontam_recall.py --seed 25 26 27 28 --cache .cache/decontam_recall

Both methods run the project's batch functions (what the Spark UDFs call) on the same SSCD
embeddings: `threshold` (whole-image cosine >= 0.95, FineVision's rule) and the default `verified`
(FAISS candidates at `--candidate-threshold`, top `--candidate-k` per training image, then
`udfs.verify.pair_features` and the rule in `--rule`). The verified decision is the stage's: a
pair at or above the threshold, or of identical bytes, is always a hit (the floor); below it the
rule and its vetoes decide. A hit is a (training image, benchmark image) pair; a false hit is any
hit other than a copy and its original, counted apart when the training image is a copy of another
benchmark image (a sibling). Printed every run:
- recall per edit family and per kind, for the threshold, the rule alone (as the stage decided
  before the floor) and the default; false hits; the cost (pairs verified, seconds);
- "found that the threshold misses" and "missed that the threshold finds" (0 by the floor), and
  what the rule alone would have missed (what the floor rescues);
- recall per held-out edit family: for each family a rule fitted (`bench/decontam_fit.py`'s fit and
  the `# fit:` settings of `--rule`) on these seeds' pairs without that family's copies, judged on
  that family's copies (`--no-held-out` skips it).
Seeds from 25 on are evaluation seeds (photographs from a pool the tuning seeds never see).
`--cache DIR` keeps each seed's candidate pairs and features (keyed by the images, the search
settings and the source of udfs/verify.py, tiles.py and sscd.py).
"""

from __future__ import annotations

import argparse
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from decontam_fit import DEFAULT_EXCLUDED, DEFAULT_VETOES, fit_rule, parse_vetoes, read_settings
from decontam_labelled import EDITS, KINDS, Image_, counts, labelled_set

from etl.config import CONF_DIR
from etl.stages.decontaminate import top_k_per_query
from udfs import knn
from udfs.sscd import EmbedderSpec, embed_bytes
from udfs.verify import FEATURES, VerifierRule, pair_features, view_bound

Pairs = set[tuple[int, int]]


@dataclass
class Measured:
    """One or more seeds' labelled sets (concatenated) with both methods' inputs."""

    bench: list[Image_]
    train: list[Image_]
    threshold_hits: Pairs  # every pair at or above the threshold (no top-k cut)
    rows: np.ndarray  # candidate pairs: training rows ...
    bench_rows: np.ndarray  # ... and benchmark rows
    features: dict[str, np.ndarray]
    embed_seconds: float
    verify_seconds: float
    pair_seeds: np.ndarray  # the seed of each candidate pair
    train_vectors: np.ndarray | None = None  # SSCD embeddings (for the embedding-only filter)
    bench_vectors: np.ndarray | None = None
    standout: np.ndarray | None = None  # each candidate pair's normalised score (`udfs.knn.standout_scores`)


def candidates(train_vectors: np.ndarray, bench_vectors: np.ndarray, threshold: float, k: int) -> knn.Hits:
    index = knn.build_index(bench_vectors)
    hits = knn.search_threshold_arrays(index, train_vectors, tau=threshold)
    keep = top_k_per_query(hits.query_rows, hits.similarities, k)
    return knn.Hits(hits.query_rows[keep], hits.index_rows[keep], hits.similarities[keep])


def measure(seed: int, args: argparse.Namespace, spec: EmbedderSpec) -> Measured:
    started = time.perf_counter()
    bench, train = labelled_set(seed, args.per_kind, tuple(args.kinds))
    print(f"labelled set (seed {seed}): {counts(bench, train)}; made in {time.perf_counter() - started:.1f} s")
    cache = _cache_path(args, seed, bench, train)
    seeds = lambda n: np.full(n, seed)  # noqa: E731
    if cache is not None and cache.exists():
        with np.load(cache) as saved:
            print(f"  features of seed {seed} read from {cache}")
            threshold_hits = set(zip(saved["exact_rows"].tolist(), saved["exact_bench_rows"].tolist(), strict=True))
            features = {name: saved[f"feature_{name}"] for name in FEATURES}
            rows, bench_rows = saved["rows"], saved["bench_rows"]
            vectors = [saved[k] if k in saved.files else None for k in ("train_vectors", "bench_vectors")]
            if vectors[0] is None or vectors[1] is None:
                vectors = [embed_bytes(spec, [i.data for i in train]), embed_bytes(spec, [i.data for i in bench])]
            return Measured(
                bench, train, threshold_hits, rows, bench_rows, features,
                float(saved["embed_seconds"]), float(saved["verify_seconds"]), seeds(len(rows)), *vectors,
            )  # fmt: skip
    started = time.perf_counter()
    bench_vectors = embed_bytes(spec, [image.data for image in bench])
    train_vectors = embed_bytes(spec, [image.data for image in train])
    embed_seconds = time.perf_counter() - started
    exact = candidates(train_vectors, bench_vectors, args.threshold, len(bench))
    started = time.perf_counter()
    found = candidates(train_vectors, bench_vectors, args.candidate_threshold, args.candidate_k)
    rows, bench_rows = found.query_rows, found.index_rows
    features = pair_features(
        spec,
        [train[r].data for r in rows],
        [bench[b].data for b in bench_rows],
        [train[r].text for r in rows],
        [bench[b].text for b in bench_rows],
    )
    verify_seconds = time.perf_counter() - started
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(
            cache, rows=rows, bench_rows=bench_rows, exact_rows=exact.query_rows, exact_bench_rows=exact.index_rows,
            embed_seconds=embed_seconds, verify_seconds=verify_seconds,
            train_vectors=train_vectors, bench_vectors=bench_vectors,
            **{f"feature_{name}": values for name, values in features.items()},
        )  # fmt: skip
    threshold_hits = set(zip(exact.query_rows.tolist(), exact.index_rows.tolist(), strict=True))
    return Measured(
        bench, train, threshold_hits, rows, bench_rows, features, embed_seconds, verify_seconds, seeds(len(rows)),
        train_vectors, bench_vectors,
    )  # fmt: skip


def _cache_path(args: argparse.Namespace, seed: int, bench: list[Image_], train: list[Image_]) -> Path | None:
    if not args.cache:
        return None
    digest = hashlib.sha256()
    for image in [*bench, *train]:
        digest.update(image.data)
        digest.update((image.text or "").encode())
    for module in ("verify", "tiles", "sscd"):
        digest.update((Path(__file__).parents[1] / "udfs" / f"{module}.py").read_bytes())
    digest.update(f"{args.candidate_threshold} {args.candidate_k} {args.threshold}".encode())
    return Path(args.cache) / f"seed{seed}-{digest.hexdigest()[:16]}.npz"


def concatenated(parts: list[tuple[int, Measured]]) -> Measured:
    """Several seeds' sets as one: each seed searched on its own, its rows shifted past the previous seeds'."""
    if len(parts) == 1:
        return parts[0][1]
    out = Measured([], [], set(), np.empty(0, np.int64), np.empty(0, np.int64), {}, 0.0, 0.0, np.empty(0, np.int64))
    for seed, part in parts:
        train_offset, bench_offset = len(out.train), len(out.bench)
        out.bench += [Image_(f"s{seed}/{i.name}", i.data, i.text, i.kind, source=i.source) for i in part.bench]
        out.train += [
            Image_(
                f"s{seed}/{i.name}",
                i.data,
                i.text,
                i.kind,
                i.edit,
                None if i.original is None else i.original + bench_offset,
            )
            for i in part.train
        ]
        out.threshold_hits |= {(r + train_offset, b + bench_offset) for r, b in part.threshold_hits}
        out.rows = np.concatenate([out.rows, part.rows + train_offset])
        out.bench_rows = np.concatenate([out.bench_rows, part.bench_rows + bench_offset])
        out.features = {
            name: np.concatenate([out.features.get(name, np.empty(0, np.float32)), part.features[name]])
            for name in part.features
        }
        out.pair_seeds = np.concatenate([out.pair_seeds, part.pair_seeds])
        if part.standout is not None:
            previous = np.empty(0, np.float32) if out.standout is None else out.standout
            out.standout = np.concatenate([previous, part.standout])
        out.embed_seconds += part.embed_seconds
        out.verify_seconds += part.verify_seconds
    return out


def add_measure_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, nargs="+", default=[25], help="one or more seeds, taken together")
    parser.add_argument("--per-kind", type=int, default=4, help="benchmark images per kind")
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--candidate-threshold", type=float, default=0.3)
    parser.add_argument("--candidate-k", type=int, default=3)
    parser.add_argument("--threshold", type=float, default=0.95)
    parser.add_argument("--cache", help="keep each seed's candidate pairs and features here")
    parser.add_argument("--standout-neighbours", type=int, default=5, help="decontaminate.standout_neighbours")
    parser.add_argument("--standout-weight", type=float, default=1.1, help="decontaminate.standout_weight")
    parser.add_argument(
        "--standout-margin", type=float, nargs="*", default=[],
        help="decontaminate.standout_margin values to report the default with (no value: without the filter)",
    )  # fmt: skip


def measure_seeds(args: argparse.Namespace) -> Measured:
    spec = EmbedderSpec()
    parts = []
    for seed in args.seed:
        part = measure(seed, args, spec)
        part.standout = standout_of(part, args)
        parts.append((seed, part))
    return concatenated(parts)


def standout_of(measured: Measured, args: argparse.Namespace) -> np.ndarray:
    """The stage's normalised score (`udfs.knn.standout_scores`) of each candidate pair: over every
    pair of the seed's search at the candidate floor, the benchmark images grouped by
    `copy_groups` at the threshold, as `etl.stages.decontaminate.search_training_images` does."""
    assert measured.train_vectors is not None and measured.bench_vectors is not None
    index = knn.build_index(measured.bench_vectors)
    full = knn.search_threshold_arrays(index, measured.train_vectors, tau=args.candidate_threshold)
    groups = knn.copy_groups(measured.bench_vectors, args.threshold)
    scores = knn.standout_scores(
        full.query_rows, full.index_rows, full.similarities, groups, args.threshold,
        args.candidate_threshold, args.standout_neighbours, args.standout_weight,
    )  # fmt: skip
    by_pair = dict(
        zip(zip(full.query_rows.tolist(), full.index_rows.tolist(), strict=True), scores.tolist(), strict=True)
    )
    return np.array(
        [by_pair[p] for p in zip(measured.rows.tolist(), measured.bench_rows.tolist(), strict=True)], np.float32
    )


# ---- decisions --------------------------------------------------------------------------------


def copies_of(measured: Measured) -> Pairs:
    return {(row, image.original) for row, image in enumerate(measured.train) if image.edit not in (None, "negative")}


def labels_of(measured: Measured) -> np.ndarray:
    truth = copies_of(measured)
    return np.array([p in truth for p in zip(measured.rows.tolist(), measured.bench_rows.tolist(), strict=True)], bool)


def floor_hits(measured: Measured) -> Pairs:
    """Hits whatever the rule says: pairs at or above the threshold, and identical bytes."""
    bench_of: dict[bytes, list[int]] = {}
    for row, image in enumerate(measured.bench):
        bench_of.setdefault(image.data, []).append(row)
    same = {(row, b) for row, image in enumerate(measured.train) for b in bench_of.get(image.data, [])}
    return measured.threshold_hits | same


def decided_by_rule(measured: Measured) -> np.ndarray:
    """bool per candidate pair: below the floor, so the rule decides it."""
    floor = floor_hits(measured)
    return np.array(
        [p not in floor for p in zip(measured.rows.tolist(), measured.bench_rows.tolist(), strict=True)], bool
    )


def accepted_pairs(measured: Measured, rule: VerifierRule, mask: np.ndarray | None = None) -> Pairs:
    accepted = rule.score(measured.features) >= rule.decision
    if mask is not None:
        accepted &= mask
    return set(zip(measured.rows[accepted].tolist(), measured.bench_rows[accepted].tolist(), strict=True))


def cascade_line(features: dict[str, np.ndarray], rule: VerifierRule, decided: np.ndarray) -> str:
    """How far the stage's cascade (`udfs.verify.verify_pairs`) goes for the pairs the rule decides."""
    unmeasured = {**features, "sscd_views": np.full_like(features["sscd_views"], np.nan)}
    vetoed = rule.vetoed(unmeasured) & decided
    bounded = ~np.isnan(view_bound(rule, features)) & decided & ~vetoed
    views = decided & ~vetoed & ~bounded
    return (
        f"cascade: of {int(decided.sum())} pairs the rule decides, {int(vetoed.sum())} vetoed on tile evidence, "
        f"{int(bounded.sum())} settled by the score's bounds, {int(views.sum())} need the SSCD views"
    )


# ---- the report ---------------------------------------------------------------------------------


def report(name: str, hits: Pairs, measured: Measured) -> dict:
    train, truth = measured.train, copies_of(measured)
    present = [edit for edit in EDITS if any(image.edit == edit for image in train)]
    kinds = [kind for kind in KINDS if any(image.kind == kind for image in measured.bench)]
    print(f"\n{name}: {len(hits)} hit(s)")
    for edit in present:
        rows = [(row, image.original) for row, image in enumerate(train) if image.edit == edit]
        by_kind = ", ".join(f"{k} {sum(p in hits for p in rows if train[p[0]].kind == k)}" for k in kinds)
        print(
            f"  {edit:<20} recall {sum(p in hits for p in rows) / len(rows):.3f}  ({by_kind} of {len(rows) // len(kinds)})"
        )
    by_kind = {k: {p for p in truth if train[p[0]].kind == k} for k in kinds}
    print("  by kind: " + ", ".join(f"{k} {len(hits & of) / len(of):.3f}" for k, of in by_kind.items()))
    false_hits = sorted(hits - truth)
    on_clean = [(r, b) for r, b in false_hits if train[r].edit == "negative"]
    print(
        f"  overall recall {len(hits & truth) / len(truth):.3f} ({len(hits & truth)}/{len(truth)}); false hits "
        f"{len(false_hits)} ({len(on_clean)} on images that copy no benchmark image, "
        f"{len(false_hits) - len(on_clean)} on copies of a sibling benchmark image)"
    )
    for row, bench_row in false_hits[:8]:
        print(f"    false hit: {train[row].name} -> {measured.bench[bench_row].name}")
    return {
        "recall": len(hits & truth) / len(truth),
        "false_hits": len(false_hits),
        "false_hits_on_clean": len(on_clean),
    }


def held_out_families(
    measured: Measured, settings: dict, strength: float, standout: np.ndarray | None = None
) -> dict[str, tuple[int, int, int]]:
    """Per edit family: (copies, found by the default, found by the rule alone) under a rule fitted
    on the other families' copies and every negative (the pairs of a held-out copy with a sibling
    benchmark image left out of the fit too)."""
    labels, decided, floor = labels_of(measured), decided_by_rule(measured), floor_hits(measured)
    truth = copies_of(measured)
    edit_of = np.array([measured.train[row].edit for row in measured.rows.tolist()], dtype=object)
    out = {}
    for family in dict.fromkeys(image.edit for image in measured.train if image.edit not in (None, "negative")):
        fitted_on = decided & (edit_of != family)
        rule, _ = fit_rule(
            {name: values[fitted_on] for name, values in measured.features.items()},
            labels[fitted_on],
            strength,
            **settings,
        )
        copies = {p for p in truth if measured.train[p[0]].edit == family}
        below = accepted_pairs(measured, rule, decided if standout is None else decided & standout)
        alone = accepted_pairs(measured, rule)
        out[family] = (len(copies), len(copies & (floor | below)), len(copies & alone))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_measure_arguments(parser)
    parser.add_argument("--rule", default=str(CONF_DIR / "decontaminate" / "verifier.yaml"))
    parser.add_argument("--no-held-out", action="store_true", help="skip the held-out edit families")
    args = parser.parse_args()
    measured = measure_seeds(args)
    seeds = " ".join(map(str, args.seed))
    rule = VerifierRule.from_file(args.rule)
    print(f"SSCD whole-image embeddings: {measured.embed_seconds:.1f} s (shared by both methods)")
    labels, decided = labels_of(measured), decided_by_rule(measured)
    truth, floor, threshold = copies_of(measured), floor_hits(measured), measured.threshold_hits
    print(
        f"candidates (SSCD >= {args.candidate_threshold}, top {args.candidate_k}): {len(measured.rows)} pairs "
        f"({int(labels.sum())} copies), {int(decided.sum())} below the floor for the rule; "
        f"{len(truth - floor - set(zip(measured.rows.tolist(), measured.bench_rows.tolist(), strict=True)))} copies "
        f"neither candidates nor at the floor; features {measured.verify_seconds:.1f} s"
    )
    print(cascade_line(measured.features, rule, decided))
    alone = accepted_pairs(measured, rule)
    default = floor | accepted_pairs(measured, rule, decided)
    results = {
        "threshold": report(f"threshold (SSCD >= {args.threshold})", threshold, measured),
        "rule alone": report("verified rule alone (vetoes everywhere, no floor)", alone, measured),
        "default": report("default: verified (the floor, then the rule below it)", default, measured),
    }
    filtered = {}
    for margin in args.standout_margin:
        assert measured.standout is not None
        stands_out = measured.standout >= np.float32(margin)
        left = decided & stands_out
        name = f"default with the standout filter (margin {margin:g}, {args.standout_neighbours} neighbours)"
        print(
            f"\nstandout filter, margin {margin:g}: {int(left.sum())} of {int(decided.sum())} pairs below the floor "
            f"left for image work ({int((labels & decided).sum())} copies among them before, "
            f"{int((labels & left).sum())} after)"
        )
        hits = floor | accepted_pairs(measured, rule, left)
        results[name] = report(name, hits, measured)
        filtered[margin] = (hits, stands_out)
        print(f"  missed that the threshold finds: {len((threshold & truth) - hits)}")
    if filtered:
        print("\nper edit family, copies found (threshold / default / default with the filter at each margin):")
        for edit in dict.fromkeys(i.edit for i in measured.train if i.edit not in (None, "negative")):
            rows = {(r, i.original) for r, i in enumerate(measured.train) if i.edit == edit}
            cells = " / ".join(str(len(rows & hits)) for hits, _ in filtered.values())
            print(f"  {edit:<20} {len(rows & threshold)} / {len(rows & default)} / {cells}  (of {len(rows)})")
    missed_alone = sorted((truth & threshold) - alone)
    print(
        f"\nfigures (seed {seeds}): copies {len(truth)}; found that the threshold misses: "
        f"{len((default & truth) - threshold)}; missed that the threshold finds: {len((threshold & truth) - default)}"
    )
    print(
        f"  the rule alone would have missed {len(missed_alone)} copies the threshold finds (the floor rescues "
        f"them): " + ", ".join(measured.train[r].name for r, _ in missed_alone[:12])
    )
    if not args.no_held_out:
        settings = read_settings(args.rule) or {
            "margin": 1.5, "negative_weight": 80.0, "vetoes": parse_vetoes(DEFAULT_VETOES),
            "excluded": DEFAULT_EXCLUDED, "l2": 1.0,
        }  # fmt: skip
        strength = settings.pop("l2")
        print(f"\nheld-out edit families (seed {seeds}; each fitted without that family, l2 {strength:g}):")
        total = [0, 0, 0]
        with_filter = {m: held_out_families(measured, settings, strength, out) for m, (_, out) in filtered.items()}
        for family, (copies, found, found_alone) in held_out_families(measured, settings, strength).items():
            at_threshold = sum(1 for p in threshold & truth if measured.train[p[0]].edit == family)
            cells = "".join(f"; with the filter at {m:g}: {f[family][1]}" for m, f in with_filter.items())
            print(
                f"  {family:<20} default {found / copies:.3f} ({found}/{copies}); rule alone {found_alone}; "
                f"threshold {at_threshold}{cells}"
            )
            total = [total[0] + copies, total[1] + found, total[2] + found_alone]
        print(
            f"  {'all held out':<20} default {total[1] / total[0]:.3f} ({total[1]}/{total[0]}); rule alone {total[2]}"
        )
    print(
        f"\nsummary (seed {seeds}): threshold recall {results['threshold']['recall']:.3f}, false hits "
        f"{results['threshold']['false_hits']} ({results['threshold']['false_hits_on_clean']} on clean images); "
        f"default recall {results['default']['recall']:.3f}, false hits {results['default']['false_hits']} "
        f"({results['default']['false_hits_on_clean']} on clean images); {len(measured.rows)} pairs verified in "
        f"{measured.verify_seconds:.1f} s"
    )


if __name__ == "__main__":
    main()
