"""Gold export of the sample corpus, the tiny SmolVLM trained on it from a pinned Delta version
(MLflow params, metrics, dataset input, model), evaluation split into contaminated and clean items,
mixtures, and TorchDistributor with two CPU processes."""

from __future__ import annotations

import math

import pytest
from pyspark.sql import functions as F

from etl import tables
from etl.config import load_config
from etl.train import data
from etl.train.config import load_train_config
from etl.train.evaluate import EvalConfig, evaluate
from etl.train.metrics import accuracy, anls, exact_match, relaxed_accuracy
from etl.train.mixture import MixtureSpec, mixture_predicate
from etl.train.run import train


@pytest.fixture(scope="module")
def setting(corpus_run, tmp_path_factory):
    run, _ = corpus_run
    root = tmp_path_factory.mktemp("train")
    pipeline = load_config(overrides=[f"lakehouse={run.config.lakehouse}", f"mlflow.tracking_uri=sqlite:///{root / 'mlflow.db'}"])
    return run, pipeline, root


@pytest.fixture(scope="module")
def trained(setting):
    run, pipeline, root = setting
    config = load_train_config("tiny", [f"output_dir={root / 'tiny'}", "max_steps=8", "checkpoint_every=4",
                                        "batch_size=2", "warmup_ratio=0.25", "mlflow.system_metrics_interval_s=0.5"])
    return train(config, pipeline)


def test_gold_of_the_corpus_flags_exactly_the_samples_with_hits(spark, corpus_run):
    run, _ = corpus_run
    gold = tables.read(spark, run.table("gold_samples"))
    silver = tables.read(spark, run.table("silver_samples"))
    hit_samples = {r["sample_id"] for r in tables.read(spark, run.table("contamination_hits")).select("sample_id").collect()}
    flagged = {r["sample_id"] for r in gold.filter("contaminated").select("sample_id").collect()}
    assert hit_samples and flagged == hit_samples
    assert gold.count() == silver.count()  # policies flag and annotate: nothing removed
    assert gold.filter(F.col("dup_cluster_id").isNotNull()).count() > 0


def test_tiny_model_trains_on_the_pinned_gold_version_and_its_loss_falls(setting, trained):
    run, _, _ = setting
    gold_version = next(r for r in run.reports if r.stage == "export").output_versions["gold_samples"]
    assert trained.source.version == gold_version
    assert len(trained.losses) == 8 and all(math.isfinite(x) for x in trained.losses)
    assert sum(trained.losses[-3:]) / 3 < trained.losses[0] - 0.5, trained.losses


def test_mlflow_run_holds_params_metrics_dataset_input_lineage_and_model(setting, trained):
    import mlflow
    from mlflow import MlflowClient

    run, pipeline, _ = setting
    client = MlflowClient(pipeline.mlflow.tracking_uri)
    logged = client.get_run(trained.mlflow_run_id)
    params, tags = logged.data.params, logged.data.tags
    assert params["max_steps"] == "8" and params["model.text.hidden_size"] == "64"
    assert params["data.resolved_version"] == str(trained.source.version)
    assert tags["curation.run_id"] == run.run_id and tags["gold.version"] == str(trained.source.version)
    for metric in ("train/loss", "train/lr", "train/tokens_per_s", "train/images_per_s"):
        history = client.get_metric_history(trained.mlflow_run_id, metric)
        assert len(history) == 8, metric
    lrs = [m.value for m in sorted(client.get_metric_history(trained.mlflow_run_id, "train/lr"), key=lambda m: m.step)]
    assert lrs[0] < max(lrs) and lrs[-1] < max(lrs)  # warm-up, then cosine decay
    assert any(key.startswith("system/") for key in logged.data.metrics)
    inputs = logged.inputs.dataset_inputs
    assert len(inputs) == 1
    source = __import__("json").loads(inputs[0].dataset.source)
    assert source["path"].endswith("gold_samples") and source["delta_table_version"] == trained.source.version
    artifacts = {a.path for a in client.list_artifacts(trained.mlflow_run_id, "checkpoints")}
    assert artifacts == {"checkpoints/step-4"}
    assert trained.registered_version == "1"
    mlflow.set_tracking_uri(pipeline.mlflow.tracking_uri)
    loaded = mlflow.pytorch.load_model("models:/finevision-tiny/1")
    assert sum(p.numel() for p in loaded.parameters()) < 5_000_000


def test_evaluation_reports_overall_contaminated_and_clean_scores(spark, setting, trained):
    from mlflow import MlflowClient

    run, pipeline, _ = setting
    scores = evaluate(trained.final_dir, pipeline, EvalConfig(limit=6, max_new_tokens=4,
                      metrics={"chartqa_local": "relaxed_accuracy"}), run_id=trained.mlflow_run_id)
    by_name = {s.benchmark: s for s in scores}
    assert set(by_name) == {"easyvqa_test", "chartqa_local"}
    hits = tables.read(spark, run.table("contamination_hits")).select("benchmark", "benchmark_item_id").distinct().collect()
    for name, score in by_name.items():
        assert score.n_contaminated == len({h["benchmark_item_id"] for h in hits if h["benchmark"] == name}) > 0
        assert score.n_clean == 6
        assert score.all == pytest.approx(
            (score.contaminated * score.n_contaminated + score.clean * score.n_clean) / score.n_all
        )
    assert by_name["chartqa_local"].metric == "relaxed_accuracy" and by_name["easyvqa_test"].metric == "exact_match"
    metrics = MlflowClient(pipeline.mlflow.tracking_uri).get_run(trained.mlflow_run_id).data.metrics
    for suffix in ("", ".contaminated", ".clean"):
        assert f"eval/easyvqa_test/exact_match{suffix}" in metrics
        assert f"eval/chartqa_local/relaxed_accuracy{suffix}" in metrics


def test_metrics_follow_the_reference_definitions():
    assert exact_match("Red.", ["red"]) == 1.0 and exact_match("dark red", ["red"]) == 0.0
    assert relaxed_accuracy("10.4", ["10"]) == 1.0 and relaxed_accuracy("10.6", ["10"]) == 0.0
    assert relaxed_accuracy("Yes", ["yes"]) == 1.0
    assert anls("helo", ["hello"]) == pytest.approx(0.8) and anls("xyz", ["hello"]) == 0.0
    assert accuracy("(B) because", ["B"]) == 1.0 and accuracy("A", ["B"]) == 0.0
    assert accuracy("the text says STOP here", ["stop"]) == 1.0


def test_mixture_predicate_selects_the_same_rows_in_spark_and_in_the_training_reader(spark, corpus_run):
    run, _ = corpus_run
    ref = run.table("gold_samples")
    version = tables.current_version(spark, ref)
    spec = MixtureSpec(name="m", subsets={"easyvqa": 1.0, "charts": 0.5}, min_ratings={"relevance": 3},
                       include_contaminated=False)
    where = mixture_predicate(spec)
    rows = tables.read(spark, ref, version).select("sample_id", "subset", "contaminated", "relevance_min").collect()
    expected = {
        r["sample_id"] for r in rows
        if not r["contaminated"] and (r["relevance_min"] is None or r["relevance_min"] >= 3)
        and (r["subset"] == "easyvqa" or (r["subset"] == "charts" and int(r["sample_id"][:8], 16) < 16**8 // 2))
    }
    charts = sum(1 for r in rows if r["subset"] == "charts" and not r["contaminated"])
    assert 0 < len([s for s in expected if s in {r["sample_id"] for r in rows if r["subset"] == "charts"}]) < charts
    assert {r["sample_id"] for r in tables.read(spark, ref, version).filter(where).select("sample_id").collect()} == expected
    source = data.GoldSource(ref.path, version, where)
    assert data.count_rows(source) == len(expected)
    assert {r["sample_id"] for r in data.delta_rows(source)} == expected


def test_rank_shares_partition_the_rows_of_the_training_reader(spark, corpus_run):
    run, _ = corpus_run
    ref = run.table("gold_samples")
    source = data.GoldSource(ref.path, tables.current_version(spark, ref))
    everything = [r["sample_id"] for r in data.delta_rows(source)]
    shares = [[r["sample_id"] for r in data.delta_rows(source, rank, 3)] for rank in range(3)]
    assert sorted(sum(shares, [])) == sorted(everything) and len(set(everything)) == len(everything)
    assert all(len(share) > len(everything) / 6 for share in shares)


def test_torch_distributor_trains_with_two_cpu_processes(spark, setting):
    run, pipeline, root = setting
    config = load_train_config("tiny", [f"output_dir={root / 'ddp'}", "max_steps=2", "checkpoint_every=0",
                                        "batch_size=1", "grad_accum=1", "distributed.num_processes=2",
                                        "mlflow.registered_model_name=null", "mlflow.system_metrics=false"])
    result = train(config, pipeline, spark)
    assert result.world == 2
    assert len(result.losses) == 2 and all(math.isfinite(x) for x in result.losses)


def test_every_training_config_validates_with_its_tile_tokens():
    from etl.train.config import TRAIN_CONF_DIR

    configs = {p.stem: load_train_config(p.stem) for p in TRAIN_CONF_DIR.glob("*.yaml")}
    assert set(configs) >= {"tiny", "smolvlm_256m", "nanovlm_460m"}
    assert configs["tiny"].image_seq_len == 4
    assert configs["smolvlm_256m"].image_seq_len == configs["nanovlm_460m"].image_seq_len == 64  # reference: 64 per tile
    assert configs["smolvlm_256m"].model.init == "smollm2"
