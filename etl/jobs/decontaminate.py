"""`finevision decontaminate`: image and text hits against the benchmarks -> contamination_hits,
contamination_rates, and removed_samples under policy `remove`."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from pyspark.sql import functions as F

from etl import tables
from etl.config import CONF_DIR, ConfigError, PipelineConfig
from etl.confs import session_conf
from etl.resources import task_cpus
from etl.reuse import reused
from etl.runs import PipelineRun
from etl.schema import CONTAMINATION_HITS, CONTAMINATION_RATES
from etl.sources.files import ArrowFiles
from etl.specs import embedder_spec
from etl.stages import decontaminate as stage
from etl.stages import text_decontam
from etl.stages.embed import held_embeddings
from udfs.knn import build_index, copy_groups, index_fingerprint, serialize_index, vectors_from_arrow
from udfs.sscd import model_id
from udfs.verify import VerifierRule

log = logging.getLogger("finevision")
HIT_KEYS = ["sample_id", "image_id", "benchmark", "benchmark_item_id", "method", "model_id", "threshold", "rule"]
ARROW_BATCH_BYTES = "spark.sql.execution.arrow.maxBytesPerBatch"


def index_source(run: PipelineRun, data: bytes) -> stage.IndexSource:
    """Ship the serialised index: inside the UDF's closure, or a file under the lakehouse for huge
    indexes (no broadcast variable: Spark Connect has none)."""
    fingerprint = index_fingerprint(data)
    if run.config.decontaminate.index_transport == "closure":
        return stage.IndexSource(fingerprint, lambda: data)
    from pyarrow import fs as pafs

    root = tables.TableRef.of(run.config, "_indexes").path or run.config.lakehouse
    path = f"{root}/{fingerprint}.faiss"
    filesystem, local = pafs.FileSystem.from_uri(path) if "://" in path else (pafs.LocalFileSystem(), path)
    filesystem.create_dir(local.rsplit("/", 1)[0], recursive=True)
    with filesystem.open_output_stream(local) as out:
        out.write(data)
    size = len(data)
    return stage.IndexSource(fingerprint, lambda: ArrowFiles().read_bytes(path, size + 1))


def verifier_rule(config: PipelineConfig) -> VerifierRule:
    """The verified method's decision rule, read on the driver (it travels to executors in the UDF)."""
    path = config.decontaminate.verifier_rule
    try:
        return VerifierRule.from_file(CONF_DIR / "decontaminate" / "verifier.yaml" if path is None else path)
    except ValueError as exc:
        raise ConfigError(f"decontaminate.verifier_rule: {exc}") from None


def image_method(config: PipelineConfig) -> str:
    settings = config.decontaminate
    return f"sscd-faiss-{settings.index}" if settings.method == "threshold" else "sscd-verified"


def current_rules(config: PipelineConfig) -> dict[str, str]:
    """The `rule` column of the image and text hits this configuration makes: method, model, the
    thresholds and, for the verified method, its candidates and the rule's digest. Export and the
    rates count only hits whose rule is one of these (`etl.stages.decontaminate.current_hits`)."""
    settings = config.decontaminate
    image = f"{image_method(config)}|{model_id(embedder_spec(config))}|sscd>={settings.threshold:g}"
    if settings.method == "verified":
        image += f"|candidates>={settings.candidate_threshold:g} top {settings.candidate_k}"
        if settings.standout_margin is not None:
            image += (
                f" standout>={settings.standout_margin:g}"
                f" of {settings.standout_neighbours}x{settings.standout_weight:g}"
            )
        image += f"|rule {verifier_rule(config).digest()}"
    min_words = settings.text_min_words or settings.text_ngram
    return {"image": image, "text": f"text-ngram|word-{settings.text_ngram}gram|min {min_words} words"}


def run(run: PipelineRun) -> None:
    spark, settings = run.spark, run.config.decontaminate
    model = model_id(embedder_spec(run.config))
    method, rules = image_method(run.config), current_rules(run.config)
    with (
        run.stage("decontaminate") as report,
        session_conf(spark, {ARROW_BATCH_BYTES: str(run.config.embed.arrow_batch_bytes)}),
    ):
        silver = run.read_input(report, "silver_samples")
        items = run.read_input(report, "benchmark_items")
        embeddings = run.read_input(report, "image_embeddings").filter(F.col("model_id") == model)
        training, benchmark = stage.training_images(silver), stage.benchmark_images(items)

        # The benchmark side is bounded (the evaluation sets), so it is gathered on the driver, as Arrow.
        n, min_words = settings.text_ngram, settings.text_min_words or settings.text_ngram
        bench_grams = text_decontam.BenchmarkGrams.from_arrow(
            text_decontam.benchmark_text_grams(items, n, min_words).toArrow()
        )
        hits = text_decontam.text_hits(silver, bench_grams, n, min_words, run.run_id)
        hits = hits.withColumn("decided_by", F.lit("text")).withColumn("rule", F.lit(rules["text"]))
        bench_table = (
            embeddings.join(benchmark.select("image_id").distinct(), "image_id")
            .select("image_id", "embedding")
            .orderBy("image_id")
            .toArrow()
        )
        vectors = vectors_from_arrow(bench_table) if bench_table.num_rows else np.zeros((0, 512), np.float32)
        if not bench_table.num_rows:
            log.warning("[decontaminate] no benchmark image has an embedding of %s: identical images only", model)
        index = build_index(vectors, kind=settings.index if bench_table.num_rows else "exact", nprobe=settings.nprobe)
        log.info("[decontaminate] %s index over %d benchmark images", settings.index, bench_table.num_rows)
        source = index_source(run, serialize_index(index))
        index_rows = spark.createDataFrame(
            pd.DataFrame(
                {
                    "index_row": np.arange(bench_table.num_rows, dtype=np.int64),
                    "bench_image_id": pd.Series(bench_table.column("image_id").to_pylist(), dtype=object),
                }
            ),
            "index_row long, bench_image_id string",
        )
        train_embeddings = held_embeddings(embeddings, silver)
        pair_counts: dict[str, int] = {}
        if settings.method == "threshold":
            found = stage.search_training_images(train_embeddings, source, settings.threshold, settings.k)
            pairs = stage.image_pairs(found, index_rows, training, benchmark)
            image_hits = stage.image_hits(pairs, model, settings.threshold, method, rules["image"], run.run_id)
        else:
            standout = None
            if settings.standout_margin is not None:
                # copy groups over the benchmark side (bounded, on the driver): re-encodings of one
                # image in several benchmark items are never background to each other
                standout = stage.Standout(
                    copy_groups(vectors, settings.threshold),
                    settings.standout_neighbours,
                    settings.standout_weight,
                    settings.standout_margin,
                )
            found = stage.search_training_images(
                train_embeddings,
                source,
                settings.threshold,
                settings.k,
                candidate_threshold=settings.candidate_threshold,
                top_k=settings.candidate_k,
                standout=standout,
            )
            pairs = stage.image_pairs(found, index_rows, training, benchmark)
            # what the cascade costs: candidate pairs, and those below the threshold that are verified
            above = F.col("similarity") >= F.lit(settings.threshold).cast("float")
            by_side = {
                r["above"]: r["n"] for r in pairs.groupBy(above.alias("above")).agg(F.count("*").alias("n")).collect()
            }
            pair_counts = {"pairs.candidates": sum(by_side.values()), "pairs.verified": by_side.get(False, 0)}
            image_hits = stage.verified_hits(
                pairs,
                silver,
                items,
                embedder_spec(run.config, task_cpus(run.spark, None)),
                verifier_rule(run.config),
                settings.threshold,
                model,
                method,
                rules["image"],
                run.run_id,
                broadcast_pairs=pair_counts["pairs.candidates"] <= settings.broadcast_pairs,
            )
        hits = image_hits.unionByName(hits)
        # FAISS search and verification run once; on serverless the hits go to a scratch table
        with run.scratch() as scratch, reused(hits, scratch) as hits:
            counts = hits.groupBy("method", "decided_by").agg(F.count("*").alias("n")).collect()
            report.rows_in = silver.count()
            report.counters = dict(pair_counts)
            for row in counts:  # hits per method, and per rule that decided them
                for key in (f"hits.{row['method']}", f"hits.decided_by.{row['decided_by']}"):
                    report.counters[key] = report.counters.get(key, 0) + row["n"]
            commit = run.commit("decontaminate")
            report.output_versions["contamination_hits"] = tables.merge_insert(
                spark, run.table("contamination_hits"), hits, HIT_KEYS, commit, CONTAMINATION_HITS
            )
            rates = stage.contamination_rates(silver, hits)
            report.output_versions["contamination_rates"] = tables.overwrite(
                spark, run.table("contamination_rates"), rates, commit, CONTAMINATION_RATES
            )
            overall = rates.filter("subset = '*'").first()
            report.counters["contaminated_samples"] = overall["contaminated_samples"] if overall else 0
            report.rows_out = report.rows_in
            removing = settings.policy == "remove"
            run.write_removals(report, stage.removals(hits, run.run_id) if removing else None, commit)
            if removing:
                report.dropped = {"contaminated": report.counters["contaminated_samples"]}
                report.rows_out = report.rows_in - report.dropped["contaminated"]
