"""`finevision evaluate`: a trained model over `benchmark_items`, scored with each benchmark's
metric and split into contaminated and clean items.

An item is contaminated when `contamination_hits` links it to a training sample (an image copy or a
copied text). Every score is reported three ways, side by side: all items, contaminated items, clean
items; the gap between the last two is what contamination is worth on that benchmark. Results go to
the MLflow run that trained the model (or a new run), with the per-item predictions as a table.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field

from etl.config import PROJECT_ROOT, ConfigError, PipelineConfig, Strict, _read_yaml
from etl.train.metrics import METRICS

log = logging.getLogger("finevision")
EVAL_CONFIG = PROJECT_ROOT / "conf" / "eval.yaml"


class EvalConfig(Strict):
    benchmarks: list[str] = Field(default_factory=list, description="empty = every benchmark in benchmark_items")
    metrics: dict[str, str] = Field(default_factory=dict, description="benchmark -> metric; default exact_match")
    default_metric: str = "exact_match"
    max_new_tokens: int = Field(16, gt=0)
    limit: int | None = Field(None, gt=0, description="most clean items per benchmark (contaminated: all)")
    experiment: str = "finevision-evaluation"


def load_eval_config(path: str | Path | None = None, overrides: list[str] = ()) -> EvalConfig:
    from etl.config import apply_override

    data = _read_yaml(Path(path) if path else EVAL_CONFIG)
    for assignment in overrides:
        apply_override(data, assignment)
    config = EvalConfig.model_validate(data)
    unknown = {m for m in [*config.metrics.values(), config.default_metric] if m not in METRICS}
    if unknown:
        raise ConfigError(f"eval metrics: unknown {sorted(unknown)}; known: {sorted(METRICS)}")
    return config


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


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def split_scores(items: list[dict], metric_of: dict[str, str]) -> list[Score]:
    """Per benchmark: the mean item score over all, contaminated and clean items."""
    scores = []
    for benchmark in sorted({i["benchmark"] for i in items}):
        mine = [i for i in items if i["benchmark"] == benchmark]
        dirty = [i["score"] for i in mine if i["contaminated"]]
        clean = [i["score"] for i in mine if not i["contaminated"]]
        scores.append(Score(benchmark, metric_of[benchmark], _mean(dirty + clean), _mean(dirty), _mean(clean),
                            len(mine), len(dirty)))
    return scores


def _read(uri: str, sql: str, name: str):
    import pyarrow as pa
    from deltalake import DeltaTable, QueryBuilder

    table = DeltaTable(uri)
    reader = QueryBuilder().register(name, table).execute(sql)
    return pa.RecordBatchReader.from_stream(reader).read_all(), table.version()


def benchmark_items(pipeline: PipelineConfig, config: EvalConfig) -> tuple[list[dict], dict[str, int]]:
    """Items with a reference answer, each flagged contaminated or not; and the versions read."""
    from etl.config import IDENTIFIER
    from etl.train.run import table_uri

    for name in config.benchmarks:
        if not IDENTIFIER.match(name):
            raise ConfigError(f"eval benchmarks: {name!r} is not an identifier")
    where = f" WHERE benchmark IN ({', '.join(repr(b) for b in config.benchmarks)})" if config.benchmarks else ""
    items, items_version = _read(
        table_uri("benchmark_items", pipeline), f"SELECT benchmark, item_id, images, texts FROM items{where}", "items"
    )
    hits_uri = table_uri("contamination_hits", pipeline)
    try:
        hits, hits_version = _read(hits_uri, "SELECT DISTINCT benchmark, benchmark_item_id FROM hits", "hits")
        contaminated = set(zip(hits.column(0).to_pylist(), hits.column(1).to_pylist()))
    except Exception as exc:  # noqa: BLE001 - deltalake raises several kinds for a missing table
        raise ConfigError(f"evaluate needs contamination_hits ({hits_uri}): run decontaminate first ({exc})") from None
    rows = []
    for row in sorted(items.to_pylist(), key=lambda r: (r["benchmark"], r["item_id"])):
        turns = row["texts"] or []
        if not turns or not (turns[0]["assistant"] or "").strip():
            continue  # test splits without answers cannot be scored
        rows.append({**row, "contaminated": (row["benchmark"], row["item_id"]) in contaminated})
    if config.limit:
        kept, clean_seen = [], {}
        for row in rows:
            if not row["contaminated"]:
                clean_seen[row["benchmark"]] = clean_seen.get(row["benchmark"], 0) + 1
                if clean_seen[row["benchmark"]] > config.limit:
                    continue
            kept.append(row)
        rows = kept
    return rows, {"benchmark_items": items_version, "contamination_hits": hits_version}


def load_model(model: str):
    """(model, processor) from a saved folder (checkpoint, `final`) or an MLflow model URI."""
    from transformers import AutoProcessor, Idefics3ForConditionalGeneration

    if "://" in model or model.startswith("models:/") or model.startswith("runs:/"):
        import mlflow

        local = Path(mlflow.artifacts.download_artifacts(model))
        return mlflow.pytorch.load_model(model), AutoProcessor.from_pretrained(str(local / "extra_files"))
    return Idefics3ForConditionalGeneration.from_pretrained(model), AutoProcessor.from_pretrained(model)


def predict(model, processor, item: dict, max_new_tokens: int) -> str:
    import torch
    from PIL import Image

    from etl.train.data import prompt_text
    from etl.train.model import END_OF_UTTERANCE

    images = [Image.open(io.BytesIO(i["bytes"])).convert("RGB") for i in (item["images"] or [])]
    prompt = prompt_text(item["texts"][0]["user"], len(images))
    if images:
        inputs = processor(text=[prompt], images=[images], return_tensors="pt")
    else:
        inputs = processor.tokenizer([prompt], return_tensors="pt", add_special_tokens=False)
    end = processor.tokenizer.convert_tokens_to_ids(END_OF_UTTERANCE)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=end,
                             pad_token_id=processor.tokenizer.pad_token_id)
    text = processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    return text.strip()


def evaluate(model_ref: str, pipeline: PipelineConfig, config: EvalConfig, run_id: str | None = None) -> list[Score]:
    import mlflow

    items, versions = benchmark_items(pipeline, config)
    if not items:
        raise ConfigError("no benchmark item with a reference answer to evaluate on")
    model, processor = load_model(model_ref)
    model.eval()
    metric_of = {b: config.metrics.get(b, config.default_metric) for b in {i["benchmark"] for i in items}}
    for item in items:
        item["prediction"] = predict(model, processor, item, config.max_new_tokens)
        answer = item["texts"][0]["assistant"]
        item["score"] = METRICS[metric_of[item["benchmark"]]](item["prediction"], [answer])
    scores = split_scores(items, metric_of)
    mlflow.set_tracking_uri(pipeline.mlflow.tracking_uri)
    if run_id is None:
        mlflow.set_experiment(config.experiment)
    with mlflow.start_run(run_id=run_id, run_name=None if run_id else "evaluate"):
        mlflow.log_params({f"eval.input.{k}": v for k, v in versions.items()} | {"eval.model": model_ref[:500]})
        for s in scores:
            prefix = f"eval/{s.benchmark}/{s.metric}"
            values = {prefix: s.all, f"{prefix}.contaminated": s.contaminated, f"{prefix}.clean": s.clean}
            mlflow.log_metrics({k: v for k, v in values.items() if v is not None}
                               | {f"eval/{s.benchmark}/items": s.n_all, f"eval/{s.benchmark}/items.contaminated": s.n_contaminated})
        mlflow.log_table({
            "benchmark": [i["benchmark"] for i in items], "item_id": [i["item_id"] for i in items],
            "contaminated": [i["contaminated"] for i in items], "question": [i["texts"][0]["user"] for i in items],
            "answer": [i["texts"][0]["assistant"] for i in items], "prediction": [i["prediction"] for i in items],
            "score": [i["score"] for i in items],
        }, "eval/predictions.json")
    return scores


def format_scores(scores: list[Score]) -> str:
    cell = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    lines = [f"{'benchmark':<18} {'metric':<17} {'all':>7} {'contaminated':>13} {'clean':>7}   items (contaminated)"]
    for s in scores:
        lines.append(f"{s.benchmark:<18} {s.metric:<17} {cell(s.all):>7} {cell(s.contaminated):>13} {cell(s.clean):>7}"
                     f"   {s.n_all} ({s.n_contaminated})")
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
