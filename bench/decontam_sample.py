"""What the verified method costs on the sample corpus, with and without the standout filter
(`decontaminate.standout_margin`, `udfs.knn.standout_scores`), on tables already ingested,
cleaned and embedded:

    .venv/bin/finevision samples
    for s in ingest clean embed; do .venv/bin/finevision --lakehouse .cache/sample-lake $s; done
    .venv/bin/python bench/decontam_sample.py --lakehouse .cache/sample-lake --margins 0 0.05 0.1 --time

First, from the embeddings alone (no image decoded): the candidate pairs below the threshold per
margin (training image x benchmark image, after the `candidate_k` cut) and, for each benchmark
copy the corpus manifest plants, whether it is at the threshold, a candidate the filter keeps, or
one it drops. With `--time`, the decontaminate job itself in one Spark session, `--rounds` rounds
alternating threshold, verified without the filter and verified with it at `--time-margin`: each
run's stage seconds and counters (`pairs.verified`: pairs left for image work), then the ratios to
the threshold method (the machine's load is printed: compare ratios, not seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from pyspark.sql import functions as F

from etl.config import load_config
from etl.jobs import decontaminate
from etl.runs import PipelineRun
from etl.session import build_session
from etl.specs import embedder_spec
from etl.stages import decontaminate as stage
from etl.stages.embed import held_embeddings
from udfs import knn
from udfs.sscd import model_id


def vectors_of(frame) -> tuple[list[str], np.ndarray]:
    table = frame.select("image_id", "embedding").orderBy("image_id").toArrow()
    return table.column("image_id").to_pylist(), knn.vectors_from_arrow(table)


def pairs_report(spark, config, manifest: dict, margins: list[float], dump: Path | None = None) -> None:
    settings = config.decontaminate
    lake = config.lakehouse
    embeddings = spark.read.format("delta").load(f"{lake}/image_embeddings")
    embeddings = embeddings.filter(F.col("model_id") == model_id(embedder_spec(config)))
    silver = spark.read.format("delta").load(f"{lake}/silver_samples")
    items = spark.read.format("delta").load(f"{lake}/benchmark_items")
    bench_ids = stage.benchmark_images(items).select("image_id").distinct()
    b_ids, b_vectors = vectors_of(embeddings.join(bench_ids, "image_id"))
    t_ids, t_vectors = vectors_of(held_embeddings(embeddings, silver))
    index = knn.build_index(b_vectors)
    floor, threshold = settings.candidate_threshold, settings.threshold
    hits = knn.search_threshold_arrays(index, t_vectors, tau=floor)
    top = stage.candidate_mask(hits.query_rows, hits.similarities, threshold, settings.candidate_k)
    groups = knn.copy_groups(b_vectors, threshold)
    scores = knn.standout_scores(
        hits.query_rows, hits.index_rows, hits.similarities, groups, threshold, floor,
        settings.standout_neighbours, settings.standout_weight,
    )  # fmt: skip
    below = top & (hits.similarities < np.float32(threshold))
    if dump is not None:  # for bench/decontam_standout_sweep.py
        planted_pairs = [
            [c["training"]["image_sha256"], c["benchmark_ref"]["image_sha256"]] for c in manifest["contamination"]
        ]
        np.savez(
            dump, train_ids=np.array(t_ids), bench_ids=np.array(b_ids), train_vectors=t_vectors,
            bench_vectors=b_vectors, planted=json.dumps(planted_pairs),
        )  # fmt: skip
    best = np.full(len(t_ids), -1.0, np.float32)
    np.maximum.at(best, hits.query_rows, hits.similarities)
    print(
        f"sample corpus: {len(t_ids)} training images, {len(b_ids)} benchmark images ({len(set(groups.tolist()))} "
        f"copy groups); best cosine to the benchmark: median {np.median(best[best >= 0]):.2f}; candidates "
        f"(>= {floor:g}, top {settings.candidate_k}) below the threshold: {int(below.sum())} image pairs"
    )
    pair_of = {
        (t_ids[q], b_ids[b]): i
        for i, (q, b) in enumerate(zip(hits.query_rows.tolist(), hits.index_rows.tolist(), strict=True))
    }
    planted = [
        (c["training"]["image_sha256"], c["benchmark_ref"]["image_sha256"], c) for c in manifest["contamination"]
    ]
    for margin in margins:
        left = below & (scores >= np.float32(margin))
        fates = []
        for train_id, bench_id, c in planted:
            i = pair_of.get((train_id, bench_id))
            if train_id == bench_id or (i is not None and hits.similarities[i] >= threshold):
                fate = "threshold"
            elif i is None or not top[i]:
                fate = "not a candidate"
            else:
                fate = f"{'kept' if left[i] else 'DROPPED'} ({hits.similarities[i]:.2f}, score {scores[i]:.2f})"
            fates.append(f"{c['transformation']}{'' if c['must_find'] else '?'}: {fate}")
        print(
            f"  margin {margin:g}: {int(left.sum())} of {int(below.sum())} pairs left for image work "
            f"({int(left.sum()) / max(int(below.sum()), 1):.1%}); planted copies: " + "; ".join(fates)
        )


def timed_runs(spark, args, rounds: int) -> None:
    configs = {
        "threshold": ["decontaminate.method=threshold"],
        "verified": ["decontaminate.method=verified", "decontaminate.standout_margin=null"],
        f"verified+standout {args.time_margin:g}": [
            "decontaminate.method=verified",
            f"decontaminate.standout_margin={args.time_margin}",
        ],
    }
    if args.skip_unfiltered:
        del configs["verified"]
    seconds: dict[str, list[float]] = {name: [] for name in configs}
    for round_ in range(rounds):
        for name, overrides in configs.items():
            config = load_config(args.config, [*overrides, *args.sets], args.lakehouse)
            run = PipelineRun(spark, config, "decontaminate")
            load = os.getloadavg()[0]
            try:
                decontaminate.run(run)
            finally:
                run.close()
            report = run.reports[-1]
            seconds[name].append(report.seconds)
            print(
                f"round {round_ + 1} {name}: {report.seconds:.1f} s (load {load:.1f}); counters "
                f"{json.dumps(report.counters, sort_keys=True)}",
                flush=True,
            )
    base = sum(seconds["threshold"])
    print(
        "summary: "
        + ", ".join(f"{name} {sum(s):.1f} s ({sum(s) / base:.2f}x)" for name, s in seconds.items())
        + f" over {rounds} round(s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lakehouse", default=".cache/sample-lake")
    parser.add_argument("--config", default=None)
    parser.add_argument("--manifest", type=Path, default=Path("data/samples/manifest.json"))
    parser.add_argument("--margins", type=float, nargs="+", default=[0.0, 0.02, 0.05, 0.1])
    parser.add_argument("--set", dest="sets", action="append", default=[], help="config override")
    parser.add_argument("--dump", type=Path, help="save the embeddings and planted pairs here (npz)")
    parser.add_argument("--time", action="store_true", help="also time the decontaminate job per method")
    parser.add_argument("--time-margin", type=float, default=0.05)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--skip-unfiltered", action="store_true", help="time threshold and the filtered method only")
    args = parser.parse_args()
    config = load_config(args.config, ["decontaminate.method=verified", *args.sets], args.lakehouse)
    spark = build_session("local", {"spark.sql.shuffle.partitions": str(config.shuffle_partitions)})
    started = time.perf_counter()
    pairs_report(spark, config, json.loads(args.manifest.read_text()), args.margins, args.dump)
    print(f"(pairs from the embeddings in {time.perf_counter() - started:.1f} s)")
    if args.time:
        timed_runs(spark, args, args.rounds)


if __name__ == "__main__":
    main()
