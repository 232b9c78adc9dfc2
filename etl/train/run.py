"""`finevision train`: SmolVLM on a pinned gold version, tracked in MLflow.

The driver pins the gold version (the latest unless configured), resolves the mixture to one SQL
predicate and counts its rows, opens the MLflow run (flattened config as params, the Delta table and
version as a dataset input, the curation run that wrote the version as tags, system metrics), then
trains in-process or through TorchDistributor on Spark, and finally logs and registers the model.
Gold is read through Spark only (etl/train/snapshot.py): the driver writes the pinned, filtered rows
as a parquet snapshot on storage every process reads; the processes stream their share of it with
pyarrow and log steps to the same run.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from etl.config import IDENTIFIER, PipelineConfig, TokenizerConfig
from etl.runs import _flat_params
from etl.tables import TableRef
from etl.train import data, snapshot
from etl.train.config import TrainConfig
from etl.train.mixture import load_mixture, mixture_order, mixture_predicate, mixture_repeats

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


def table_ref(table: str, pipeline: PipelineConfig) -> TableRef:
    """`data.table` as a table: a path/URI as given, a name under the lakehouse (or the configured
    catalog), or a catalog name `catalog.schema.table`."""
    if "/" in table or "://" in table:
        return TableRef(name=table.rstrip("/").rsplit("/", 1)[-1], path=table)
    parts = table.split(".")
    if not all(IDENTIFIER.match(p) for p in parts) or len(parts) > 3:
        raise ValueError(f"table {table!r} is neither a path nor a table name (name, schema.name, catalog.schema.name)")
    if len(parts) == 1:
        return TableRef.of(pipeline, table)
    return TableRef(name=parts[-1], qualified_name=table)


def table_name(table: str, pipeline: PipelineConfig) -> str:
    """`data.table` as Spark reads it: the path of a path table, else the catalog name."""
    ref = table_ref(table, pipeline)
    return ref.qualified_name or ref.location


def snapshot_dir(config: TrainConfig, pipeline: PipelineConfig) -> str:
    """Where the driver writes the training snapshot: `data.snapshot_dir`, else beside the path
    tables; catalog tables need it set (a volume every node reads)."""
    folder = config.data.snapshot_dir
    if folder is None:
        if pipeline.catalog:
            raise ValueError(
                "data.snapshot_dir is not set: with catalog tables the training snapshot goes to a folder every "
                "node reads, e.g. --train-set data.snapshot_dir=/Volumes/<catalog>/<schema>/<volume>/training"
            )
        folder = f"{pipeline.lakehouse.rstrip('/')}/_training"
    return folder if "://" in folder else str(Path(folder).resolve())


def resolve_source(config: TrainConfig, pipeline: PipelineConfig, spark) -> tuple[data.GoldSource, int]:
    """The pinned gold version (read through Spark), filtered by the mixture and `data.where`, and
    its row count."""
    if spark is None:
        raise ValueError("training reads gold through Spark: no session given")
    table = table_name(config.data.table, pipeline)
    version = config.data.version if config.data.version is not None else snapshot.latest_version(spark, table)
    spec = load_mixture(config.data.mixture) if config.data.mixture else None
    predicates = [p for p in (mixture_predicate(spec) if spec else None, config.data.where) if p]
    source = data.GoldSource(
        table,
        version,
        " AND ".join(f"({p})" for p in predicates) or None,
        config.data.mixture,
        mixture_repeats(spec) if spec else None,
        dict(spec.min_turn_ratings) if spec and spec.min_turn_ratings else None,
        spec.keep_unrated if spec else True,
        mixture_order(spec) if spec else None,
        {a: dict(w) for a, w in spec.turn_weights.items()} if spec and spec.turn_weights else None,
    )
    return source, snapshot.count_rows(spark, source)


def curation_lineage(source: data.GoldSource, pipeline: PipelineConfig, spark) -> dict[str, str]:
    """Tags linking the training run to the curation run that wrote the pinned version."""
    from etl import tables

    tags = {"gold.table": source.table, "gold.version": str(source.version)}
    ref = snapshot.gold_ref(source.table)
    commit = spark.sql(f"DESCRIBE HISTORY {ref.sql}").where(f"version = {int(source.version)}").first()
    meta = json.loads(commit["userMetadata"] or "{}") if commit else {}
    run_id = meta.get("run_id")
    if not run_id or not RUN_ID.match(run_id):
        return tags
    tags |= {"curation.run_id": run_id, "curation.stage": meta.get("stage", ""), "curation.git": meta.get("git", "")}
    runs = table_ref("pipeline_runs", pipeline)
    if not tables.exists(spark, runs):  # no run log next to this table (a copied table): the Delta metadata is enough
        return tags
    found = (
        tables.read(spark, runs)
        .where(f"run_id = '{run_id}' AND mlflow_run_id IS NOT NULL")
        .select("mlflow_run_id")
        .first()
    )
    if found:
        tags["curation.mlflow_run_id"] = found[0]
    return tags


def init_files(config: TrainConfig, pipeline: PipelineConfig) -> tuple[TokenizerConfig, str | None]:
    """What the processes start from: the tokenizer and, for `model.init: smollm2`, the language
    model checkpoint, both from `finevision assets prepare` where `assets.dir` is set (no GGUF
    package needed anywhere); else the packaged GGUF, which must then be installed here."""
    from etl import assets

    tokenizer = pipeline.clean.tokenizer
    prepared = assets.tokenizer_json(pipeline)
    if prepared:
        tokenizer = tokenizer.model_copy(update={"path": prepared})
    if config.model.init != "smollm2":
        return tokenizer, None
    checkpoint = assets.gguf_checkpoint(pipeline, config.model.gguf_package, config.model.gguf_file)
    if checkpoint is None:
        from udfs.tokens import gguf_path

        try:
            gguf_path(config.model.gguf_package, config.model.gguf_file)
        except FileNotFoundError as error:
            raise ValueError(
                f"model.init smollm2: {error}, and assets.dir is not set; prepare the init files once with "
                "`finevision assets prepare --out DIR` (its judge converts the GGUF) and set assets.dir=DIR"
            ) from None
    return tokenizer, checkpoint


def _process(
    config_json: str,
    source: dict,
    tokenizer_json: str,
    language_model: str | None,
    tracking_uri: str,
    run_id: str,
    mlflow_names: dict,
) -> dict[str, Any]:
    """One training process (the whole run, or one TorchDistributor rank). Rank 0 logs the final
    model to the MLflow run itself: with `local_mode: false` it runs on an executor, whose disk the
    driver cannot read."""
    import os
    import time

    import torch

    from etl.train.loop import train_process
    from etl.train.model import build_model, build_processor
    from udfs.staging import is_uri, local_path

    config = TrainConfig.model_validate_json(config_json)
    tokenizer = TokenizerConfig.model_validate_json(tokenizer_json)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if config.distributed.use_gpu else "gloo")
    gold = data.GoldSource(**source)
    if gold.world != world:
        raise ValueError(f"the snapshot of {gold} is for {gold.world} processes, this is one of {world}")
    if tokenizer.path and is_uri(tokenizer.path):  # prepared assets on a bucket: a local copy per node
        tokenizer = tokenizer.model_copy(update={"path": local_path(tokenizer.path)})
    processor = build_processor(config, tokenizer)
    model = build_model(config, processor, local_path(language_model) if language_model else None)
    on_step = on_checkpoint = None
    if rank == 0:
        from mlflow import MlflowClient
        from mlflow.entities import Metric

        client = MlflowClient(tracking_uri)

        def on_step(m):
            now = int(time.time() * 1000)
            values = {
                "train/loss": m.loss,
                "train/lr": m.lr,
                "train/tokens_per_s": m.tokens_per_s,
                "train/images_per_s": m.images_per_s,
                "train/samples_per_s": m.samples_per_s,
            }
            client.log_batch(run_id, metrics=[Metric(k, float(v), now, m.step) for k, v in values.items()])

        if config.mlflow.log_checkpoints:

            def on_checkpoint(step, path):
                client.log_artifacts(run_id, str(path), f"checkpoints/step-{step}")

    try:
        outcome = train_process(
            config,
            processor,
            model,
            lambda epoch: data.snapshot_rows(gold, rank, batch_rows=config.data.read_batch_rows),
            on_step,
            on_checkpoint,
            rank,
            world,
            f"rank {rank} of {world} of {gold}",
        )
        if rank == 0:
            outcome["model_uri"], outcome["registered_version"] = log_model(
                outcome["final"], run_id, tracking_uri, **mlflow_names
            )
        return outcome
    finally:
        if world > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def on_databricks(tracking_uri: str) -> bool:
    return tracking_uri == "databricks" or tracking_uri.startswith("databricks://")


def experiment_name(name: str, tracking_uri: str) -> str:
    """Databricks keeps experiments in the workspace tree: a bare name goes under /Shared."""
    return f"/Shared/{name}" if on_databricks(tracking_uri) and not name.startswith("/") else name


def mlflow_names(config: TrainConfig, pipeline: PipelineConfig) -> dict[str, str | None]:
    """The experiment and registered model names where the tracking server wants them: on
    Databricks an absolute workspace path and a Unity Catalog name `catalog.schema.model`."""
    experiment = experiment_name(config.mlflow.experiment, pipeline.mlflow.tracking_uri)
    model = config.mlflow.registered_model_name
    if not on_databricks(pipeline.mlflow.tracking_uri):
        return {"experiment": experiment, "registered_model_name": model, "registry_uri": None}
    if model is not None and model.count(".") != 2:
        if not pipeline.catalog:
            raise ValueError(
                f"mlflow.registered_model_name {model!r}: Unity Catalog needs catalog.schema.model "
                "(or set the pipeline's catalog)"
            )
        model = f"{pipeline.catalog}.{model.replace('-', '_')}"
    return {"experiment": experiment, "registered_model_name": model, "registry_uri": "databricks-uc"}


def train(config: TrainConfig, pipeline: PipelineConfig, spark=None) -> TrainResult:
    import mlflow

    folder = snapshot_dir(config, pipeline)
    tokenizer, language_model = init_files(config, pipeline)
    source, rows = resolve_source(config, pipeline, spark)
    if rows == 0:
        raise ValueError(f"no gold rows to train on: {source}")
    world = config.distributed.world
    source = snapshot.write_snapshot(spark, source, world, folder)
    snapshot.require_rows_on_every_rank(spark, source)
    log.info("training on %s: %d rows, snapshot %s", source, rows, source.snapshot)
    names = mlflow_names(config, pipeline)
    mlflow.set_tracking_uri(pipeline.mlflow.tracking_uri)
    mlflow.set_experiment(names["experiment"])
    if config.mlflow.system_metrics:
        mlflow.set_system_metrics_sampling_interval(config.mlflow.system_metrics_interval_s)
        mlflow.set_system_metrics_samples_before_logging(1)
    with mlflow.start_run(run_name=f"train-{config.name}", log_system_metrics=config.mlflow.system_metrics) as run:
        run_id = run.info.run_id
        mlflow.log_params(
            _flat_params(config)
            | {
                "data.resolved_version": source.version,
                "data.resolved_rows": rows,
                "data.resolved_where": source.where or "",
                "data.snapshot": source.snapshot,
                "image_seq_len": config.image_seq_len,
            }
        )
        mlflow.set_tags(curation_lineage(source, pipeline, spark) | {"command": "train", "train.config": config.name})
        mlflow.log_input(
            _dataset_input(source, config),
            context="training",
            tags={"mixture": config.data.mixture or "", "rows": str(rows)},
        )
        args = (
            config.model_dump_json(),
            source.__dict__,
            tokenizer.model_dump_json(),
            language_model,
            pipeline.mlflow.tracking_uri,
            run_id,
            {k: names[k] for k in ("registered_model_name", "registry_uri")},
        )
        if world > 1 or not config.distributed.local_mode:  # TorchDistributor, on the executors unless local
            from pyspark.ml.torch.distributor import TorchDistributor

            outcome = TorchDistributor(
                num_processes=world,
                local_mode=config.distributed.local_mode,
                use_gpu=config.distributed.use_gpu,
            ).run(_process, *args)
            if outcome is None:
                raise RuntimeError("TorchDistributor returned no result from rank 0")
        else:
            outcome = _process(*args)
        mlflow.log_metrics(
            {
                "train/samples_seen": outcome["samples"],
                "train/final_loss": outcome["losses"][-1],
                "train/turns_cut": outcome["turns_cut"],
                **{f"train/skipped.{k}": v for k, v in outcome["skipped"].items()},
            }
        )
    return TrainResult(
        run_id,
        source,
        rows,
        outcome["losses"],
        outcome["final"],
        outcome["model_uri"],
        outcome["registered_version"],
        outcome["world"],
    )


def _dataset_input(source: data.GoldSource, config: TrainConfig):
    from mlflow.data.delta_dataset_source import DeltaDatasetSource
    from mlflow.data.meta_dataset import MetaDataset

    digest = hashlib.sha256(f"{source.table}@{source.version}:{source.where}".encode()).hexdigest()[:16]
    ref = snapshot.gold_ref(source.table)
    name = f"{ref.name}@v{source.version}" + (f"[{config.data.mixture}]" if config.data.mixture else "")
    delta = (  # a catalog table by its name (Unity Catalog lineage), a path table by its path
        DeltaDatasetSource(delta_table_name=ref.qualified_name, delta_table_version=source.version)
        if ref.qualified_name
        else DeltaDatasetSource(path=ref.path, delta_table_version=source.version)
    )
    # mlflow declares `profile` abstract on Dataset; MetaDataset is the concrete class it documents
    return MetaDataset(delta, name=name, digest=digest)  # type: ignore[abstract]


SERVING_CODE = Path(__file__).with_name("serving.py")  # the pyfunc, a file of its own (set_model on import)


def model_example() -> pd.DataFrame:
    """The input example: a one-image question, as the served model takes it."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(buffer, format="PNG")
    return pd.DataFrame({"question": ["What colour is the image?"], "image": [buffer.getvalue()]})


def model_signature():
    """question (text) and image (encoded bytes) -> answer (text); `max_new_tokens` a parameter."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    return ModelSignature(
        Schema([ColSpec("string", "question"), ColSpec("binary", "image")]),
        Schema([ColSpec("string", "answer")]),
        ParamSchema([ParamSpec("max_new_tokens", "long", 16)]),
    )


def log_model(
    final_dir: str,
    run_id: str,
    tracking_uri: str,
    registered_model_name: str | None,
    registry_uri: str | None,
) -> tuple[str, str | None]:
    """The saved folder `final_dir` as an MLflow pyfunc of run `run_id` (etl/train/serving.py: a
    question and an image -> the answer), with a signature and an input example that validates
    (a one-image question), registered if named."""
    import mlflow
    import PIL
    import torch
    import transformers

    mlflow.set_tracking_uri(tracking_uri)
    if registry_uri:
        mlflow.set_registry_uri(registry_uri)
    info = mlflow.models.Model.log(
        artifact_path=None,
        name="model",
        flavor=mlflow.pyfunc,
        run_id=run_id,
        registered_model_name=registered_model_name,
        python_model=str(SERVING_CODE),  # logged as code: serving loads it without this project
        artifacts={"model": final_dir},
        signature=model_signature(),
        input_example=model_example(),
        pip_requirements=[
            f"mlflow=={mlflow.__version__}",
            f"torch=={torch.__version__.split('+')[0]}",
            f"transformers=={transformers.__version__}",
            f"pillow=={PIL.__version__}",
            f"pandas=={pd.__version__}",
        ],
    )
    version = info.registered_model_version
    return info.model_uri, (str(version) if registered_model_name and version is not None else None)
