"""`finevision train`: SmolVLM on a pinned gold version, tracked in MLflow.

The driver pins the gold version (the latest unless configured), resolves the mixture to one SQL
predicate and counts its rows, opens the MLflow run (flattened config as params, the Delta table and
version as a dataset input, the curation run that wrote the version as tags, system metrics), then
trains in-process or through TorchDistributor on Spark, and finally logs and registers the model.
Worker processes read Delta with `deltalake` and log steps to the same run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from etl.config import PipelineConfig, TokenizerConfig
from etl.runs import _flat_params
from etl.tables import TableRef
from etl.train import data
from etl.train.config import TrainConfig
from etl.train.mixture import load_mixture, mixture_predicate

log = logging.getLogger("finevision")
RUN_ID = re.compile(r"^[0-9a-f]{8,64}$")


@dataclass
class TrainResult:
    mlflow_run_id: str
    source: data.GoldSource
    rows: int
    losses: list[float]
    final_dir: str
    model_uri: str
    registered_version: str | None
    world: int = 1


def table_uri(table: str, pipeline: PipelineConfig) -> str:
    """A table name under the lakehouse, or a path/URI as given. Training reads Delta by path."""
    if "/" in table or "://" in table:
        return table
    ref = TableRef.of(pipeline, table)
    if ref.path is None:
        raise ValueError(f"train reads Delta by storage path: set data.table to the location of {ref}")
    return ref.path


def resolve_source(config: TrainConfig, pipeline: PipelineConfig) -> tuple[data.GoldSource, int]:
    """The pinned gold version, filtered by the mixture and `data.where`, and its row count."""
    from deltalake import DeltaTable

    uri = table_uri(config.data.table, pipeline)
    version = config.data.version if config.data.version is not None else DeltaTable(uri).version()
    predicates = [p for p in (
        mixture_predicate(load_mixture(config.data.mixture)) if config.data.mixture else None, config.data.where
    ) if p]
    source = data.GoldSource(uri, version, " AND ".join(f"({p})" for p in predicates) or None)
    return source, data.count_rows(source)


def curation_lineage(source: data.GoldSource, pipeline: PipelineConfig) -> dict[str, str]:
    """Tags linking the training run to the curation run that wrote the pinned version."""
    from deltalake import DeltaTable, QueryBuilder

    tags = {"gold.table": source.uri, "gold.version": str(source.version)}
    commit = next((h for h in DeltaTable(source.uri).history() if h.get("version") == source.version), None)
    meta = json.loads(commit.get("userMetadata") or "{}") if commit else {}
    run_id = meta.get("run_id")
    if not run_id or not RUN_ID.match(run_id):
        return tags
    tags |= {"curation.run_id": run_id, "curation.stage": meta.get("stage", ""), "curation.git": meta.get("git", "")}
    runs_uri = table_uri("pipeline_runs", pipeline)
    try:
        runs = DeltaTable(runs_uri)
    except Exception:  # no run log next to this table (a copied table): the Delta metadata is enough
        return tags
    import pyarrow as pa

    found = pa.RecordBatchReader.from_stream(QueryBuilder().register("runs", runs).execute(
        f"SELECT mlflow_run_id FROM runs WHERE run_id = '{run_id}' AND mlflow_run_id IS NOT NULL LIMIT 1"
    )).read_all()
    if found.num_rows:
        tags["curation.mlflow_run_id"] = found.column(0)[0].as_py()
    return tags


def _process(config_json: str, source: dict, tokenizer_json: str, tracking_uri: str | None, run_id: str | None) -> dict:
    """One training process (the whole run, or one TorchDistributor rank)."""
    import os

    import torch

    from etl.train.loop import train_process
    from etl.train.model import build_model, build_processor

    config = TrainConfig.model_validate_json(config_json)
    tokenizer = TokenizerConfig.model_validate_json(tokenizer_json)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if config.distributed.use_gpu else "gloo")
    gold = data.GoldSource(**source)
    processor = build_processor(config, tokenizer)
    model = build_model(config, processor)
    on_step = on_checkpoint = None
    if rank == 0 and run_id:
        from mlflow import MlflowClient
        from mlflow.entities import Metric

        client = MlflowClient(tracking_uri)

        def on_step(m):
            now = int(__import__("time").time() * 1000)
            values = {"train/loss": m.loss, "train/lr": m.lr, "train/tokens_per_s": m.tokens_per_s,
                      "train/images_per_s": m.images_per_s, "train/samples_per_s": m.samples_per_s}
            client.log_batch(run_id, metrics=[Metric(k, float(v), now, m.step) for k, v in values.items()])

        if config.mlflow.log_checkpoints:
            def on_checkpoint(step, path):
                client.log_artifacts(run_id, str(path), f"checkpoints/step-{step}")

    try:
        return train_process(
            config, processor, model, lambda epoch: data.delta_rows(gold, rank, world), on_step, on_checkpoint, rank, world
        )
    finally:
        if world > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def train(config: TrainConfig, pipeline: PipelineConfig, spark=None) -> TrainResult:
    import mlflow

    source, rows = resolve_source(config, pipeline)
    if rows == 0:
        raise ValueError(f"no gold rows to train on: {source.uri} @ {source.version} where {source.where}")
    log.info("training on %s @ version %d: %d rows (where %s)", source.uri, source.version, rows, source.where)
    mlflow.set_tracking_uri(pipeline.mlflow.tracking_uri)
    mlflow.set_experiment(config.mlflow.experiment)
    if config.mlflow.system_metrics:
        mlflow.set_system_metrics_sampling_interval(config.mlflow.system_metrics_interval_s)
        mlflow.set_system_metrics_samples_before_logging(1)
    with mlflow.start_run(run_name=f"train-{config.name}", log_system_metrics=config.mlflow.system_metrics) as run:
        run_id = run.info.run_id
        mlflow.log_params(_flat_params(config) | {"data.resolved_version": source.version, "data.resolved_rows": rows,
                                                   "data.resolved_where": source.where or "", "image_seq_len": config.image_seq_len})
        mlflow.set_tags(curation_lineage(source, pipeline) | {"command": "train", "train.config": config.name})
        mlflow.log_input(_dataset_input(source, config), context="training",
                         tags={"mixture": config.data.mixture or "", "rows": str(rows)})
        args = (config.model_dump_json(), source.__dict__, pipeline.clean.tokenizer.model_dump_json(),
                pipeline.mlflow.tracking_uri, run_id)
        if config.distributed.num_processes > 1:
            from pyspark.ml.torch.distributor import TorchDistributor

            if spark is None:
                raise ValueError("distributed training needs a Spark session (TorchDistributor)")
            outcome = TorchDistributor(
                num_processes=config.distributed.num_processes, local_mode=config.distributed.local_mode,
                use_gpu=config.distributed.use_gpu,
            ).run(_process, *args)
        else:
            outcome = _process(*args)
        mlflow.log_metrics({"train/samples_seen": outcome["samples"], "train/final_loss": outcome["losses"][-1],
                            "train/turns_cut": outcome["turns_cut"],
                            **{f"train/skipped.{k}": v for k, v in outcome["skipped"].items()}})
        model_uri, registered = _log_model(config, outcome["final"])
    return TrainResult(run_id, source, rows, outcome["losses"], outcome["final"], model_uri, registered, outcome["world"])


def _dataset_input(source: data.GoldSource, config: TrainConfig):
    from mlflow.data.delta_dataset_source import DeltaDatasetSource
    from mlflow.data.meta_dataset import MetaDataset

    digest = hashlib.sha256(f"{source.uri}@{source.version}:{source.where}".encode()).hexdigest()[:16]
    name = f"{Path(source.uri).name}@v{source.version}" + (f"[{config.data.mixture}]" if config.data.mixture else "")
    return MetaDataset(DeltaDatasetSource(path=source.uri, delta_table_version=source.version), name=name, digest=digest)


def _log_model(config: TrainConfig, final_dir: str) -> tuple[str, str | None]:
    """The final model as an MLflow PyTorch model (processor files alongside), registered if named."""
    import mlflow
    import torch
    from transformers import Idefics3ForConditionalGeneration

    model = Idefics3ForConditionalGeneration.from_pretrained(final_dir)
    extra = [str(p) for p in Path(final_dir).iterdir() if p.is_file() and not p.name.endswith(".safetensors")]
    info = mlflow.pytorch.log_model(
        model, name="model", registered_model_name=config.mlflow.registered_model_name, extra_files=extra,
        serialization_format="pickle",  # pt2 would trace forward() with an example batch
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"transformers=={__import__('transformers').__version__}"],
    )
    return info.model_uri, (str(info.registered_model_version) if config.mlflow.registered_model_name else None)
