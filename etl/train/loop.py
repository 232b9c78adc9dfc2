"""The training loop of one process: stream, encode, pack, step; AdamW with a projector learning
rate, cosine schedule with warm-up, gradient accumulation and clipping, checkpoints. Rank 0 logs to
the MLflow run the driver opened. Runs as is for one process, or as TorchDistributor's function
(DDP over gloo or NCCL) for several.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from etl.train import data
from etl.train.config import TrainConfig

log = logging.getLogger("finevision")


@dataclass
class StepMetrics:
    step: int
    loss: float
    lr: float
    tokens_per_s: float
    images_per_s: float
    samples_per_s: float


def epochs(
    rows_for_epoch: Callable[[int], Iterable[dict]], shuffle_buffer: int, seed: int, share: str = "this process's share"
) -> Iterator[dict]:
    """The stream, repeated epoch after epoch, each shuffled with its own seed; an epoch without a
    row is an error naming `share` (repeating it would loop forever)."""
    for epoch in itertools.count():
        rows = 0
        for row in data.shuffled(rows_for_epoch(epoch), shuffle_buffer, seed + epoch):
            rows += 1
            yield row
        if rows == 0:
            raise ValueError(f"no training rows in {share}")


def optimizer_for(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    projector: list[torch.nn.Parameter] = []
    backbone: list[torch.nn.Parameter] = []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (projector if ".connector." in f".{name}" else backbone).append(param)
    groups = [{"params": backbone, "lr": config.lr}, {"params": projector, "lr": config.lr_projector}]
    return torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=config.weight_decay)


def device_for(config: TrainConfig, local_rank: int = 0) -> torch.device:
    if config.device == "cpu" or (config.device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device(f"cuda:{local_rank}")


def train_process(
    config: TrainConfig,
    processor,
    model: torch.nn.Module,
    rows_for_epoch: Callable[[int], Iterable[dict]],
    on_step: Callable[[StepMetrics], None] | None = None,
    on_checkpoint: Callable[[int, Path], None] | None = None,
    rank: int = 0,
    world: int = 1,
    share: str = "the training data",
) -> dict:
    """Train `model` for config.max_steps optimizer steps; returns the losses and what was seen."""
    from transformers import get_cosine_schedule_with_warmup

    device = device_for(config, int(os.environ.get("LOCAL_RANK", rank)))
    model.to(device).train()
    wrapped: torch.nn.Module = model
    if world > 1:
        wrapped = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True
        )
    optimizer = optimizer_for(model, config)
    scheduler = get_cosine_schedule_with_warmup(
        optimizer, math.ceil(config.warmup_ratio * config.max_steps), config.max_steps
    )
    stats = data.EncodeStats()
    rows = epochs(rows_for_epoch, config.data.shuffle_buffer, config.seed + 1000 * rank, share)
    sequences = data.packed(
        data.encoded(processor, rows, config.seq_len, config.images.max_images, stats), config.seq_len, config.packing
    )
    batches = data.batches_of(sequences, config.batch_size, processor.tokenizer.pad_token_id)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.dtype == "bfloat16")
    losses: list[float] = []
    for step in range(1, config.max_steps + 1):
        started, tokens, images, samples_before = time.perf_counter(), 0, 0, stats.samples
        step_loss = 0.0
        for micro in range(config.grad_accum):
            batch = next(batches)
            images += int(batch.pop("images"))
            tokens += int(batch["attention_mask"].sum())
            batch = {k: v.to(device) for k, v in batch.items()}
            sync = micro == config.grad_accum - 1 or world == 1
            ddp = isinstance(wrapped, torch.nn.parallel.DistributedDataParallel)
            context = wrapped.no_sync() if ddp and not sync else _null()  # type: ignore[operator]  # DDP method, typed as a Module attribute
            weights = batch.pop("loss_weights", None)  # a mixture's per-turn loss weights
            with context:
                with autocast:
                    out = wrapped(**batch)
                    full = out.loss if weights is None else data.weighted_loss(out.logits, batch["labels"], weights)
                    loss = full / config.grad_accum
                loss.backward()
            step_loss += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        elapsed = time.perf_counter() - started
        losses.append(step_loss)
        if rank == 0 and on_step and (step % config.log_every == 0 or step == config.max_steps):
            on_step(
                StepMetrics(
                    step,
                    step_loss,
                    scheduler.get_last_lr()[0],
                    world * tokens / elapsed,
                    world * images / elapsed,
                    world * (stats.samples - samples_before) / elapsed,
                )
            )
        if rank == 0 and config.checkpoint_every and step % config.checkpoint_every == 0 and step < config.max_steps:
            path = save(model, processor, Path(config.output_dir) / f"checkpoint-{step}")
            if on_checkpoint:
                on_checkpoint(step, path)
    final = Path(config.output_dir) / "final"
    if rank == 0:
        save(model, processor, final)
    return {
        "losses": losses,
        "samples": stats.samples,
        "skipped": stats.skipped,
        "turns_cut": stats.turns_cut,
        "final": str(final),
        "world": world,
    }


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def save(model, processor, path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path
