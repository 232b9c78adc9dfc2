"""Choose the standout filter's settings (`decontaminate.standout_*`): for each (neighbours, weight,
margin) of a grid, the labelled set's copies found per edit family by the default with the filter
(`bench/decontam_recall.py`'s measurement, cached features) and the sample corpus's candidate pairs
left for image work and planted copies kept (embeddings dumped by `bench/decontam_sample.py --dump`):

    .venv/bin/python bench/decontam_standout_sweep.py --seed 25 26 --per-kind 2 --cache .cache/decontam_recall \
        --sample .cache/sample-vectors.npz

Only settings that lose no copy the default finds on the labelled set are marked `ok`.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import numpy as np
from decontam_recall import (
    accepted_pairs,
    add_measure_arguments,
    concatenated,
    copies_of,
    decided_by_rule,
    floor_hits,
    measure,
    standout_of,
)

from etl.config import CONF_DIR
from etl.stages.decontaminate import candidate_mask
from udfs import knn
from udfs.sscd import EmbedderSpec
from udfs.verify import VerifierRule


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_measure_arguments(parser)
    parser.add_argument("--rule", default=str(CONF_DIR / "decontaminate" / "verifier.yaml"))
    parser.add_argument("--sample", type=Path, required=True)
    parser.add_argument("--neighbours", type=int, nargs="+", default=[1, 2, 3, 5])
    parser.add_argument("--weights", type=float, nargs="+", default=[1.0, 1.03, 1.06, 1.1])
    parser.add_argument("--margins", type=float, nargs="+", default=[0.0, 0.01, 0.02, 0.03, 0.05])
    args = parser.parse_args()
    rule, spec = VerifierRule.from_file(args.rule), EmbedderSpec()
    parts = [(seed, measure(seed, args, spec)) for seed in args.seed]
    sample = np.load(args.sample)
    planted = json.loads(str(sample["planted"]))
    t_ids, b_ids = list(sample["train_ids"]), list(sample["bench_ids"])
    index = knn.build_index(sample["bench_vectors"])
    floor, threshold = args.candidate_threshold, args.threshold
    hits = knn.search_threshold_arrays(index, sample["train_vectors"], tau=floor)
    top = candidate_mask(hits.query_rows, hits.similarities, threshold, args.candidate_k)
    below = top & (hits.similarities < np.float32(threshold))
    groups = knn.copy_groups(sample["bench_vectors"], threshold)
    pair_of = {
        (t_ids[q], b_ids[b]): i
        for i, (q, b) in enumerate(zip(hits.query_rows.tolist(), hits.index_rows.tolist(), strict=True))
    }
    planted_rows = [pair_of.get((t, b)) for t, b in planted]
    planted_rows = [i for i in planted_rows if i is not None and below[i]]
    print(
        f"sample corpus: {int(below.sum())} candidate pairs below the threshold, {len(planted_rows)} planted copies among them"
    )
    whole = concatenated(parts)
    truth, floor_set = copies_of(whole), floor_hits(whole)
    decided = decided_by_rule(whole)
    default = floor_set | accepted_pairs(whole, rule, decided)
    families = list(dict.fromkeys(i.edit for i in whole.train if i.edit not in (None, "negative")))
    rows_of = {f: {(r, i.original) for r, i in enumerate(whole.train) if i.edit == f} for f in families}
    base = {f: len(rows_of[f] & default) for f in families}
    for n in args.neighbours:
        for w in args.weights:
            settings = copy.copy(args)
            settings.standout_neighbours, settings.standout_weight = n, w
            scores_l = np.concatenate([standout_of(part, settings) for _, part in parts])
            scores_s = knn.standout_scores(
                hits.query_rows, hits.index_rows, hits.similarities, groups, threshold, floor, n, w
            )
            for m in args.margins:
                left = decided & (scores_l >= np.float32(m))
                found = floor_set | accepted_pairs(whole, rule, left)
                lost = {f: base[f] - len(rows_of[f] & found) for f in families if base[f] != len(rows_of[f] & found)}
                left_s = below & (scores_s >= np.float32(m))
                kept = sum(bool(left_s[i]) for i in planted_rows)
                print(
                    f"neighbours {n} weight {w:g} margin {m:g}: labelled {int(left.sum())}/{int(decided.sum())} pairs left, "
                    f"copies {len(found & truth)} (default {len(default & truth)}), lost {lost or 'none'}; sample "
                    f"{int(left_s.sum())}/{int(below.sum())} pairs left ({int(left_s.sum()) / max(int(below.sum()), 1):.1%}), "
                    f"planted kept {kept}/{len(planted_rows)}{'  ok' if not lost and kept == len(planted_rows) else ''}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
