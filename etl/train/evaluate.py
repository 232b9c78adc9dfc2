"""`finevision evaluate`: a trained model over `benchmark_items`, scored with each benchmark's
lmms-eval metric (etl/train/metrics.py) and split into contaminated and clean items.

An item is contaminated when `contamination_hits` links it to a training sample (an image copy or a
copied text). Every score is reported three ways, side by side: all items, contaminated items, clean
items; the gap between the last two is what contamination is worth on that benchmark.

Generation runs on the executors: a pandas function over the items (`mapInPandas`) loads the model
once per Python worker (on the task's GPU when it has one) and answers `batch_size` items per
`generate` call, left-padded. Predictions go to the Delta table `eval_predictions` and to the MLflow
run that trained the model (or a new run) as a table; the scores are aggregated from that table.

    items = evaluation_items(benchmark_items, hits, config)          # DataFrame -> DataFrame
    predictions = items.mapInPandas(answer_items(spec), schema)       # on the executors
"""

from __future__ import annotations

import hashlib
import io
import logging
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from pydantic import Field
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from etl import tables
from etl.build_info import build_info
from etl.config import IDENTIFIER, PROJECT_ROOT, ConfigError, PipelineConfig, Strict, _read_yaml
from etl.schema import EVAL_PREDICTIONS, require_columns
from etl.train.aggregates import AGGREGATES
from etl.train.metrics import METRIC_NAMES, MULTIPLE_CHOICE, MULTIPLE_CHOICE_PROMPT, options_in, score_item

log = logging.getLogger("finevision")
EVAL_CONFIG = PROJECT_ROOT / "conf" / "eval.yaml"


class EvalConfig(Strict):
    benchmarks: list[str] = Field(default_factory=list, description="empty = every benchmark in benchmark_items")
    metrics: dict[str, str] = Field(default_factory=dict, description="benchmark -> metric; default exact_match")
    default_metric: str = "exact_match"
    post_prompts: dict[str, str] = Field(default_factory=dict, description="benchmark -> text after the question")
    aggregates: dict[str, str] = Field(
        default_factory=dict,
        description="benchmark -> official aggregate (etl/train/aggregates.py): mme | mmstar | ocrbench",
    )
    max_new_tokens: int = Field(16, gt=0, description="for a benchmark not in max_new_tokens_per_benchmark")
    max_new_tokens_per_benchmark: dict[str, int] = Field(
        default_factory=dict, description="benchmark -> most tokens generated (lmms-eval's generation_kwargs)"
    )
    batch_size: int = Field(8, gt=0, description="items per generate call")
    device: str = Field("auto", description="auto (the task's GPU, else CPU) | cpu | cuda")
    partitions: int | None = Field(None, gt=0, description="spread the items over this many tasks; null = as read")
    limit: int | None = Field(None, gt=0, description="most clean items per benchmark (contaminated: all)")
    experiment: str = "finevision-evaluation"
    predictions_table: str = "eval_predictions"


def load_eval_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> EvalConfig:
    from etl.config import apply_override

    data = _read_yaml(Path(path) if path else EVAL_CONFIG)
    for assignment in overrides:
        apply_override(data, assignment)
    return checked(EvalConfig.model_validate(data))


def checked(config: EvalConfig) -> EvalConfig:
    unknown = {m for m in [*config.metrics.values(), config.default_metric] if m not in METRIC_NAMES}
    if unknown:
        raise ConfigError(f"eval metrics: unknown {sorted(unknown)}; known: {list(METRIC_NAMES)}")
    unknown = {a for a in config.aggregates.values() if a not in AGGREGATES}
    if unknown:
        raise ConfigError(f"eval aggregates: unknown {sorted(unknown)}; known: {list(AGGREGATES)}")
    short = {b: n for b, n in config.max_new_tokens_per_benchmark.items() if n <= 0}
    if short:
        raise ConfigError(f"eval max_new_tokens_per_benchmark: must be positive, got {short}")
    names = [*config.benchmarks, *config.metrics, *config.post_prompts, *config.aggregates]
    for name in [*names, *config.max_new_tokens_per_benchmark, config.predictions_table]:
        if not IDENTIFIER.match(name):
            raise ConfigError(f"eval config: {name!r} is not an identifier")
    return config


def _literal_map(mapping: Mapping[str, str | int]):
    return F.create_map(*[F.lit(x) for kv in sorted(mapping.items()) for x in kv]) if mapping else None


def evaluation_items(items: DataFrame, hits: DataFrame, config: EvalConfig) -> DataFrame:
    """The items to answer: those with a reference answer, of the configured benchmarks, flagged
    `contaminated`, at most `limit` clean ones per benchmark (by item_id), with their `metric`,
    `question` (first user turn), `answer` (its reply), `post_prompt` and `max_new_tokens`.

    Contamination and the limit are worked out on ids; the image bytes are joined once, at the end,
    against the broadcast ids kept (the benchmark side is bounded)."""
    require_columns(items, ["benchmark", "item_id", "images", "texts"], "evaluation_items")
    require_columns(hits, ["benchmark", "benchmark_item_id"], "evaluation_items")
    answered = F.length(F.trim(F.coalesce(F.col("texts")[0]["assistant"], F.lit("")))) > 0
    ids = items.filter(answered).select("benchmark", "item_id").distinct()  # MME's two questions share an id
    if config.benchmarks:
        ids = ids.filter(F.col("benchmark").isin(*config.benchmarks))
    dirty = hits.select("benchmark", F.col("benchmark_item_id").alias("item_id")).distinct()
    ids = ids.join(dirty.withColumn("contaminated", F.lit(True)), ["benchmark", "item_id"], "left").select(
        "benchmark", "item_id", F.coalesce("contaminated", F.lit(False)).alias("contaminated")
    )
    if config.limit:
        rank = F.row_number().over(Window.partitionBy("benchmark", "contaminated").orderBy("item_id"))
        ids = ids.withColumn("rank", rank).filter(F.col("contaminated") | (F.col("rank") <= config.limit)).drop("rank")
    metrics, prompts = _literal_map(config.metrics), _literal_map(config.post_prompts)
    metric = (
        F.coalesce(metrics[F.col("benchmark")], F.lit(config.default_metric))
        if metrics is not None
        else F.lit(config.default_metric)
    )
    post_prompt = F.coalesce(prompts[F.col("benchmark")], F.lit("")) if prompts is not None else F.lit("")
    lengths = _literal_map(config.max_new_tokens_per_benchmark)
    max_new_tokens = F.lit(config.max_new_tokens)
    if lengths is not None:
        max_new_tokens = F.coalesce(lengths[F.col("benchmark")], max_new_tokens)
    return items.join(F.broadcast(ids), ["benchmark", "item_id"]).select(
        "benchmark",
        "item_id",
        "contaminated",
        metric.alias("metric"),
        "images",
        F.col("texts")[0]["user"].alias("question"),
        F.col("texts")[0]["assistant"].alias("answer"),
        post_prompt.alias("post_prompt"),
        max_new_tokens.alias("max_new_tokens"),
    )


def prompt_of(question: str, post_prompt: str, metric: str) -> str:
    """The question as asked: lmms-eval's post-prompt of the benchmark, and for a multiple-choice
    item whose options are listed, the instruction to answer with the letter (once)."""
    text = question + (post_prompt or "")
    if metric == MULTIPLE_CHOICE and options_in(question) and MULTIPLE_CHOICE_PROMPT.strip() not in text:
        text += MULTIPLE_CHOICE_PROMPT
    return text


@dataclass(frozen=True)
class ModelSpec:
    """What a worker loads: a model folder on storage every node reads, or an MLflow model URI."""

    model: str
    tracking_uri: str
    device: str = "auto"
    batch_size: int = 8


_LOADED: dict[ModelSpec, tuple] = {}


def is_mlflow_uri(model: str) -> bool:
    return model.startswith(("runs:/", "models:/"))


def load_model(model: str, tracking_uri: str | None = None):
    """(model, processor) from a saved folder (checkpoint, `final`) or an MLflow model URI."""
    from transformers import AutoProcessor, Idefics3ForConditionalGeneration

    if is_mlflow_uri(model):
        import mlflow

        if tracking_uri:
            mlflow.set_tracking_uri(tracking_uri)
        chat = mlflow.pyfunc.load_model(model).unwrap_python_model()  # etl/train/serving.py's ChatModel
        return chat.model, chat.processor
    return Idefics3ForConditionalGeneration.from_pretrained(model), AutoProcessor.from_pretrained(model)


def loaded(spec: ModelSpec):
    """The model of `spec`, once per Python worker, on the task's GPU when it has one."""
    if spec not in _LOADED:
        from udfs.devices import pick_device

        model, processor = load_model(spec.model, spec.tracking_uri)
        device = pick_device(spec.device)
        processor.tokenizer.padding_side = "left"  # batched generation continues every prompt at its end
        _LOADED.clear()
        _LOADED[spec] = (model.to(device).eval(), processor, device)
    return _LOADED[spec]


def generate(model, processor, device: str, prompts: list[str], images: list[list], max_new_tokens: int) -> list[str]:
    """Greedy answers to chat prompts, one `generate` call for the batch; every item has images, or none has."""
    import torch

    from etl.train.model import END_OF_UTTERANCE

    if images and images[0]:
        inputs = processor(text=prompts, images=images, return_tensors="pt", padding=True)
    else:
        inputs = processor.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    inputs = {k: v.to(device) for k, v in inputs.items()}
    tokenizer = processor.tokenizer
    with torch.no_grad():
        out = model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.convert_tokens_to_ids(END_OF_UTTERANCE),
        )
    answers = tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    return [a.strip() for a in answers]


def answer_batch(spec: ModelSpec, batch: pd.DataFrame) -> pd.DataFrame:
    """Predictions and scores for a batch of evaluation items (plain pandas, runs in a worker)."""
    from PIL import Image

    from etl.train.data import prompt_text

    model, processor, device = loaded(spec)
    prompts = [
        prompt_of(q, p, m) for q, p, m in zip(batch["question"], batch["post_prompt"], batch["metric"], strict=False)
    ]
    pictures = [
        [Image.open(io.BytesIO(i["bytes"])).convert("RGB") for i in (images if images is not None else [])]
        for images in batch["images"]
    ]
    predictions = [""] * len(batch)  # every item is answered by one of the passes below
    # A generate call takes items with images or items without, of one benchmark's max_new_tokens.
    lengths = [int(n) for n in batch["max_new_tokens"]]
    for with_images, length in sorted({(bool(p), n) for p, n in zip(pictures, lengths, strict=True)}):
        chosen = [i for i, p in enumerate(pictures) if bool(p) == with_images and lengths[i] == length]
        for start in range(0, len(chosen), spec.batch_size):
            part = chosen[start : start + spec.batch_size]
            chats = [prompt_text(prompts[i], len(pictures[i])) for i in part]
            answers = generate(
                model, processor, device, chats, [pictures[i] for i in part] if with_images else [], length
            )
            for i, answer in zip(part, answers, strict=False):
                predictions[i] = answer
    scored = [
        score_item(m, p, a, q)
        for m, p, a, q in zip(batch["metric"], predictions, batch["answer"], batch["question"], strict=False)
    ]
    return pd.DataFrame(
        {
            "benchmark": batch["benchmark"],
            "item_id": batch["item_id"],
            "contaminated": batch["contaminated"],
            "metric": batch["metric"],
            "prompt": prompts,
            "answer": batch["answer"],
            "prediction": predictions,
            "choice": [choice for _, choice in scored],
            "score": [score for score, _ in scored],
        }
    )


ANSWERED = ("benchmark", "item_id", "contaminated", "metric", "prompt", "answer", "prediction", "choice", "score")


def answer_items(spec: ModelSpec):
    """The `mapInPandas` function: every Arrow batch of items -> their predictions."""

    def answer(batches: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            if len(batch):
                yield answer_batch(spec, batch.reset_index(drop=True))

    return answer


def predicted(items: DataFrame, spec: ModelSpec, profile=None) -> DataFrame:
    """`evaluation_items` answered and scored on the executors."""
    schema = ", ".join(f"{f.name} {f.dataType.simpleString()}" for f in EVAL_PREDICTIONS if f.name in ANSWERED)
    return items.mapInPandas(answer_items(spec), schema, profile=profile)


@dataclass
class Score:
    benchmark: str
    metric: str
    all: float | None
    contaminated: float | None
    clean: float | None
    n_all: int
    n_contaminated: int

    @property
    def n_clean(self) -> int:
        return self.n_all - self.n_contaminated


def _aggregates():
    return (
        F.avg("score").alias("all"),
        F.avg(F.when(F.col("contaminated"), F.col("score"))).alias("contaminated"),
        F.avg(F.when(~F.col("contaminated"), F.col("score"))).alias("clean"),
        F.count(F.lit(1)).alias("n_all"),
        F.count(F.when(F.col("contaminated"), F.lit(1))).alias("n_contaminated"),
    )


def _scores(rows) -> list[Score]:
    return [
        Score(r["benchmark"], r["metric"], r["all"], r["contaminated"], r["clean"], r["n_all"], r["n_contaminated"])
        for r in rows
    ]


def split_scores(predictions: DataFrame) -> list[Score]:
    """Per benchmark: the mean item score over all, contaminated and clean items (one row per benchmark)."""
    return _scores(predictions.groupBy("benchmark", "metric").agg(*_aggregates()).orderBy("benchmark").collect())


def click_scores(predictions: DataFrame) -> list[Score]:
    """`click_accuracy` by platform and element type (ScreenSpot-V2's table), read from the
    reference answers (`screenspot_reference`): one row `<benchmark>/<platform>/<type>` each."""
    part = F.concat_ws(
        "/",
        "benchmark",
        F.coalesce(F.get_json_object("answer", "$.platform"), F.lit("?")),
        F.coalesce(F.get_json_object("answer", "$.element_type"), F.lit("?")),
    )
    clicks = predictions.filter(F.col("metric") == "click_accuracy").withColumn("benchmark", part)
    return _scores(clicks.groupBy("benchmark", "metric").agg(*_aggregates()).orderBy("benchmark").collect())


def _aggregate(aggregate: str, predictions: pd.DataFrame) -> dict[str, float] | None:
    items = list(zip(predictions["item_id"], predictions["score"], strict=True))
    return AGGREGATES[aggregate](items) if items else None


def official_scores(predictions: pd.DataFrame, aggregates: dict[str, str]) -> list[Score]:
    """The official aggregates of the benchmarks that define one (`aggregates`: benchmark ->
    etl/train/aggregates.py name) over all, contaminated and clean items: one Score per value,
    its `metric` the value's name (`perception_total`, `category_mean`, `correct_of_1000`)."""
    scores = []
    for benchmark, aggregate in sorted(aggregates.items()):
        rows = predictions[predictions["benchmark"] == benchmark]
        if rows.empty:
            continue
        contaminated, clean = rows[rows["contaminated"]], rows[~rows["contaminated"]]
        over_all, over_contaminated, over_clean = (_aggregate(aggregate, part) for part in (rows, contaminated, clean))
        for name, total in (over_all or {}).items():
            scores.append(
                Score(
                    benchmark,
                    name,
                    total,
                    over_contaminated[name] if over_contaminated else None,
                    over_clean[name] if over_clean else None,
                    len(rows),
                    len(contaminated),
                )
            )
    return scores


def evaluate(
    model_ref: str, pipeline: PipelineConfig, config: EvalConfig, spark: SparkSession, run_id: str | None = None
) -> list[Score]:
    """Answer, score, write `eval_predictions`, log to MLflow; returns the scores per benchmark."""
    import mlflow

    from etl.jobs.decontaminate import current_rules
    from etl.resources import stage_resource_profile
    from etl.stages.decontaminate import current_hits
    from etl.train.run import experiment_name

    items_ref, hits_ref = (
        tables.TableRef.of(pipeline, "benchmark_items"),
        tables.TableRef.of(pipeline, "contamination_hits"),
    )
    versions = {
        "benchmark_items": tables.current_version(spark, items_ref),
        "contamination_hits": tables.current_version(spark, hits_ref),
    }
    if versions["benchmark_items"] is None:
        raise ConfigError(f"evaluate needs benchmark_items ({items_ref}): run ingest first")
    if versions["contamination_hits"] is None:
        raise ConfigError(f"evaluate needs contamination_hits ({hits_ref}): run decontaminate first")
    items = evaluation_items(
        tables.read(spark, items_ref, versions["benchmark_items"]),
        current_hits(tables.read(spark, hits_ref, versions["contamination_hits"]), current_rules(pipeline).values()),
        config,
    )
    if config.partitions:
        items = items.repartition(config.partitions, "item_id")
    spec = ModelSpec(model_ref, pipeline.mlflow.tracking_uri, config.device, config.batch_size)
    mlflow.set_tracking_uri(pipeline.mlflow.tracking_uri)
    if run_id is None:
        mlflow.set_experiment(experiment_name(config.experiment, pipeline.mlflow.tracking_uri))
    with mlflow.start_run(run_id=run_id, run_name=None if run_id else "evaluate") as run:
        eval_id = uuid.uuid4().hex
        rows = predicted(items, spec, stage_resource_profile(spark, "evaluate")).select(
            F.lit(eval_id).alias("eval_id"),
            F.lit(run.info.run_id).alias("mlflow_run_id"),
            F.lit(model_ref).alias("model"),
            "*",
        )
        ref = tables.TableRef.of(pipeline, config.predictions_table)
        config_hash = hashlib.sha256(config.model_dump_json().encode()).hexdigest()[:12]
        version = tables.append(
            spark, ref, rows, tables.Commit(eval_id, "evaluate", config_hash, build_info().commit), EVAL_PREDICTIONS
        )
        written = tables.read(spark, ref, version).filter(F.col("eval_id") == eval_id)
        # The benchmark side is bounded: its predictions (text, no images) come to the driver as Arrow.
        table = written.drop("eval_id", "mlflow_run_id", "model").orderBy("benchmark", "item_id").toPandas()
        scores = split_scores(written) + click_scores(written) + official_scores(table, config.aggregates)
        if not scores:
            raise ConfigError("no benchmark item with a reference answer to evaluate on")
        mlflow.log_params(
            {f"eval.input.{k}": v for k, v in versions.items()}
            | {"eval.model": model_ref[:500], "eval.id": eval_id, f"eval.output.{config.predictions_table}": version}
        )
        for s in scores:
            prefix = f"eval/{s.benchmark}/{s.metric}"
            values = {prefix: s.all, f"{prefix}.contaminated": s.contaminated, f"{prefix}.clean": s.clean}
            mlflow.log_metrics(
                {k: v for k, v in values.items() if v is not None}
                | {f"eval/{s.benchmark}/items": s.n_all, f"eval/{s.benchmark}/items.contaminated": s.n_contaminated}
            )
        mlflow.log_table(table, "eval/predictions.json")
    return scores


def format_scores(scores: list[Score]) -> str:
    def cell(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    width = max([18, *(len(s.benchmark) for s in scores)])
    lines = [
        f"{'benchmark':<{width}} {'metric':<17} {'all':>7} {'contaminated':>13} {'clean':>7}   items (contaminated)"
    ]
    for s in scores:
        lines.append(
            f"{s.benchmark:<{width}} {s.metric:<17} {cell(s.all):>7} {cell(s.contaminated):>13} {cell(s.clean):>7}"
            f"   {s.n_all} ({s.n_contaminated})"
        )
    return "\n".join(lines)


def run_id_of(model_ref: str, tracking_uri: str) -> str | None:
    """The MLflow run that produced a model URI (runs:/ or models:/), so evaluation joins it."""
    if model_ref.startswith("runs:/"):
        return model_ref.split("/")[1]
    if model_ref.startswith("models:/"):
        import mlflow

        mlflow.set_tracking_uri(tracking_uri)
        return mlflow.models.get_model_info(model_ref).run_id
    return None
