"""What the verified method's cascade saves: the stage's `udfs.verify.verify_pairs` (evidence from
cheap to costly, only as far as the decision needs) against measuring every feature
(`udfs.verify.pair_features`) on the same candidate pairs, in one process, alternating:

    .venv/bin/python bench/decontam_cascade.py --seed 25 --per-kind 1

The pairs are the labelled set's candidates (`bench/decontam_labelled.py`: edited copies and
same-template look-alikes, the hard part of the band; SSCD >= `--candidate-threshold`, top
`--candidate-k` a training image, below the threshold). Prints each one's seconds per round and
in all, the ratio, how far the cascade went (settled by a veto, the score's bounds or the SSCD
views), and whether both decided every pair alike (they must: the cascade is exact).
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

import numpy as np
from decontam_labelled import KINDS, counts, labelled_set
from decontam_recall import candidates

from etl.config import CONF_DIR
from udfs.sscd import EmbedderSpec, embed_bytes
from udfs.verify import VerifierRule, pair_features, verify_pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=25)
    parser.add_argument("--per-kind", type=int, default=1)
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--candidate-threshold", type=float, default=0.3)
    parser.add_argument("--candidate-k", type=int, default=3)
    parser.add_argument("--threshold", type=float, default=0.95)
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of both")
    parser.add_argument("--rule", default=str(CONF_DIR / "decontaminate" / "verifier.yaml"))
    args = parser.parse_args()
    rule, spec = VerifierRule.from_file(args.rule), EmbedderSpec()
    bench, train = labelled_set(args.seed, args.per_kind, tuple(args.kinds))
    print(f"labelled set (seed {args.seed}): {counts(bench, train)}")
    found = candidates(
        embed_bytes(spec, [i.data for i in train]),
        embed_bytes(spec, [i.data for i in bench]),
        args.candidate_threshold,
        args.candidate_k,
    )
    below = found.similarities < np.float32(args.threshold)
    rows, bench_rows, similarity = found.query_rows[below], found.index_rows[below], found.similarities[below]
    inputs = (
        [train[r].data for r in rows],
        [bench[b].data for b in bench_rows],
        [train[r].text for r in rows],
        [bench[b].text for b in bench_rows],
    )
    print(f"{len(rows)} candidate pairs below the threshold")
    embed_bytes(spec, [train[0].data])  # the model is loaded before either is timed
    seconds = {"every feature": 0.0, "cascade": 0.0}
    for round_ in range(args.rounds):
        started = time.perf_counter()
        everything = rule.score(pair_features(spec, *inputs, similarity=similarity)) >= rule.decision
        full = time.perf_counter() - started
        started = time.perf_counter()
        verdicts = verify_pairs(spec, rule, similarity, *inputs)
        cascade = time.perf_counter() - started
        seconds["every feature"] += full
        seconds["cascade"] += cascade
        print(f"round {round_ + 1}: every feature {full:.1f} s, cascade {cascade:.1f} s")
    same = bool(((verdicts.scores >= rule.decision) == everything).all())
    settled = Counter(verdicts.settled_by.tolist())
    print(
        f"\nsummary (seed {args.seed}, {len(rows)} pairs, {args.rounds} rounds): every feature "
        f"{seconds['every feature']:.1f} s, cascade {seconds['cascade']:.1f} s, ratio "
        f"{seconds['cascade'] / max(seconds['every feature'], 1e-9):.2f}; settled by {dict(settled)}; "
        f"same decisions: {same}"
    )
    if not same:
        raise SystemExit("the cascade decided a pair differently from measuring every feature")


if __name__ == "__main__":
    main()
