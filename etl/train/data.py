"""Training data: the training snapshot of a pinned gold version (etl/train/snapshot.py writes it
through Spark) streamed from parquet, encoded in SmolVLM's chat format, packed into sequences and
collated into batches. No Spark here: pyarrow reads record batches, so the same code runs in the
driver and in TorchDistributor's worker processes.

    rows = snapshot_rows(source, rank=0)                  # an iterator of dicts, batch by batch
    batches = batches_of(packed(encoded(rows, ...), ...), batch_size, pad_id)

The chat format is SmolVLM's: `<|im_start|>User:<image>...question<end_of_utterance>\\nAssistant:
answer<end_of_utterance>\\n` per turn, images in the first user turn; labels are -100 everywhere but
on the answers and their `<end_of_utterance>`, so the loss is on assistant tokens only.
"""

from __future__ import annotations

import io
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import torch
from PIL import Image

from etl.train.model import END_OF_UTTERANCE, IMAGE_TOKEN

IGNORE = -100
COLUMNS = ["sample_id", "subset", "images", "texts"]
RANK_COLUMN = "train_rank"  # the snapshot's partition column: the process that reads the row


@dataclass(frozen=True)
class GoldSource:
    """A Delta table (a path or a catalog name) at a pinned version, filtered by a SQL predicate (the
    mixture, named for messages); `repeats` (SQL) says how many times a row is yielded (upsampling),
    `turn_min` the minimum score per axis a turn needs to stay (a sample without a turn left is
    skipped). `snapshot` is the folder of its training snapshot for `world` processes, once written."""

    table: str
    version: int
    where: str | None = None
    mixture: str | None = None
    repeats: str | None = None
    turn_min: dict[str, int] | None = None
    keep_unrated: bool = True
    order_by: str | None = None  # SQL ORDER BY of a curriculum
    turn_weights: dict[str, dict[int, float]] | None = None  # axis -> score -> loss weight of a turn
    snapshot: str | None = None
    world: int = 1
    files: tuple[str, ...] = ()  # the snapshot's parquet files, relative to it, as Spark committed them

    @property
    def rating_columns(self) -> list[str]:
        """The per-turn score columns the turn filter and the turn weights read."""
        return [f"{axis}_ratings" for axis in sorted(set(self.turn_min or {}) | set(self.turn_weights or {}))]

    def __str__(self) -> str:
        return f"{self.table} @ version {self.version} (mixture {self.mixture or '-'}, where {self.where or 'true'})"


# A process's share is a range of a salted hash of `sample_id`, not of `sample_id` itself: mixtures
# down-sample by `sample_id` range (`etl.train.mixture.share_bound`), and ranks cut on the same
# digits would see only the low ids that a mixture keeps.
RANK_KEY = "substr(md5(concat('rank:', sample_id)), 1, 8)"


def rank_bounds(rank: int, world: int) -> tuple[str | None, str | None]:
    """This process's range of `RANK_KEY` (8 hex digits of a hash, so uniform): [low, high)."""
    bounds = [f"{(i * 16**8) // world:08x}" for i in range(world + 1)]
    return (bounds[rank] if rank > 0 else None, bounds[rank + 1] if rank < world - 1 else None)


def rank_of_row(world: int) -> str:
    """SQL: the rank whose share holds the row (0 .. world-1)."""
    if world == 1:
        return "0"
    cases = " ".join(f"WHEN {RANK_KEY} < '{rank_bounds(r, world)[1]}' THEN {r}" for r in range(world - 1))
    return f"CASE {cases} ELSE {world - 1} END"


def snapshot_files(source: GoldSource, rank: int) -> list[str]:
    """The parquet files of `rank`'s share, in reading order (Spark names them by task, and the
    snapshot is range-sorted, so name order is row order); none where the share is empty. The
    files are those the write committed (`GoldSource.files`), not a listing of the folder, which
    can hold files of failed task attempts (Databricks' transactional commit leaves them)."""
    if source.snapshot is None:
        raise ValueError(f"{source} has no training snapshot (etl.train.snapshot.write_snapshot)")
    prefix = f"{RANK_COLUMN}={rank}/"
    return sorted(f"{source.snapshot.rstrip('/')}/{f}" for f in source.files if f.startswith(prefix))


def snapshot_batches(source: GoldSource, rank: int = 0, batch_rows: int = 256):
    """Record batches of `rank`'s share, file by file, row group by row group."""
    import pyarrow.parquet as pq

    from etl.release import filesystem

    fs, _ = filesystem(source.snapshot or "")
    for path in snapshot_files(source, rank):
        with fs.open_input_file(path) as handle:
            yield from pq.ParquetFile(handle).iter_batches(batch_size=batch_rows)


def snapshot_rows(source: GoldSource, rank: int = 0, prefetch: int = 4, batch_rows: int = 256) -> Iterator[dict]:
    """The rows of this process's share, each `repeats` times, turns below `turn_min` left out; up to
    `prefetch` record batches are read ahead in a thread, so reading overlaps with training."""
    if not 0 <= rank < source.world:
        raise ValueError(f"rank {rank} is outside the snapshot of {source} for {source.world} processes")
    turn_min, weights = source.turn_min or {}, source.turn_weights or {}
    batches = (batch.to_pylist() for batch in snapshot_batches(source, rank, batch_rows))
    for rows in prefetched(batches, prefetch) if prefetch else batches:
        for row in rows:
            repeats = int(row.pop("_repeats"))
            kept = filter_turns(row, turn_min, source.keep_unrated) if turn_min else row
            if kept is not None and weights:
                kept["_turn_weights"] = turn_weights(kept, weights)
            if kept is not None:
                for _ in range(repeats):
                    yield kept


def turn_weights(row: dict, weights: dict[str, dict[int, float]]) -> list[float]:
    """The loss weight of each turn: the product over axes of the weight of its score (a score not
    listed, or no score, weighs 1)."""
    out = []
    for index in range(len(row.get("texts") or [])):
        weight = 1.0
        for axis, by_score in weights.items():
            scores = row.get(f"{axis}_ratings")
            score = scores[index] if scores is not None and index < len(scores) else None
            weight *= by_score.get(score, 1.0) if score is not None else 1.0
        out.append(weight)
    return out


def weighted_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy with a weight per label token, over the number of label tokens (so a
    turn weighted 0.5 counts half as much as it would unweighted)."""
    shifted, target, weight = logits[:, :-1].float(), labels[:, 1:], weights[:, 1:].to(logits.device)
    losses = torch.nn.functional.cross_entropy(
        shifted.reshape(-1, shifted.shape[-1]), target.reshape(-1), ignore_index=IGNORE, reduction="none"
    )
    return (losses * weight.reshape(-1)).sum() / (target != IGNORE).sum().clamp(min=1)


def filter_turns(row: dict, turn_min: dict[str, int], keep_unrated: bool = True) -> dict | None:
    """The row without the turns scored below `turn_min` on an axis (as nanoVLM's loader drops
    turns), their ratings following them; None when no turn is left. An unrated turn (no ratings
    on the axis, or a null score) stays if keep_unrated."""
    turns = row.get("texts") or []
    keep = []
    for index in range(len(turns)):
        passes = True
        for axis, minimum in turn_min.items():
            scores = row.get(f"{axis}_ratings")
            score = scores[index] if scores is not None and index < len(scores) else None
            passes = passes and (keep_unrated if score is None else score >= minimum)
        keep.append(passes)
    if not any(keep):
        return None
    kept = dict(row)
    kept["texts"] = [t for t, k in zip(turns, keep, strict=True) if k]
    for axis in turn_min:
        scores = row.get(f"{axis}_ratings")
        if scores is not None:
            kept[f"{axis}_ratings"] = [s for s, k in zip(scores, keep, strict=False) if k]
    return kept


def prefetched(items: Iterator, depth: int) -> Iterator:
    """`items`, produced by a background thread at most `depth` ahead; its errors are re-raised here."""
    import queue
    import threading

    done = object()
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce():
        try:
            for item in items:
                if stop.is_set():
                    return
                buffer.put(item)
            buffer.put(done)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            buffer.put(exc)

    threading.Thread(target=produce, daemon=True, name="snapshot-prefetch").start()
    try:
        while (item := buffer.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


def shuffled(rows: Iterable[dict], buffer: int, seed: int) -> Iterator[dict]:
    """A streaming shuffle through a bounded buffer (never the whole stream in memory)."""
    rng, pool = random.Random(seed), []
    for row in rows:
        pool.append(row)
        if len(pool) >= buffer:
            yield pool.pop(rng.randrange(len(pool)))
    rng.shuffle(pool)
    yield from pool


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    pixel_values: torch.Tensor | None  # [tiles, 3, H, W]
    pixel_attention_mask: torch.Tensor | None
    images: int
    weights: list[float] | None = None  # loss weight per token (the turn's), when the mixture weighs turns


@dataclass
class EncodeStats:
    samples: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    turns_cut: int = 0

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


def prompt_text(question: str, images: int) -> str:
    return f"<|im_start|>User:{IMAGE_TOKEN * images}{question}{END_OF_UTTERANCE}\nAssistant:"


def encode(processor, row: dict, seq_len: int, max_images: int, stats: EncodeStats) -> Encoded | None:
    """One gold row as token ids, labels and image tiles; None (counted in stats) if it cannot fit."""
    images = [Image.open(io.BytesIO(i["bytes"])).convert("RGB") for i in (row.get("images") or [])]
    turns = row.get("texts") or []
    if len(images) > max_images:
        stats.skip("too_many_images")
        return None
    tok = processor.tokenizer
    first = turns[0] if turns else None
    if first is None:
        stats.skip("no_turns")
        return None
    if images:
        out = processor(text=[prompt_text(first["user"], len(images))], images=[images], return_tensors="pt")
        ids = out["input_ids"][0].tolist()
        pixel_values, pixel_mask = out["pixel_values"][0], out["pixel_attention_mask"][0]
    else:
        ids = tok(prompt_text(first["user"], 0), add_special_tokens=False)["input_ids"]
        pixel_values = pixel_mask = None
    labels = [IGNORE] * len(ids)
    turn_weight = row.get("_turn_weights")
    weights: list[float] | None = [0.0] * len(ids) if turn_weight is not None else None
    for index, turn in enumerate(turns):
        if index > 0:
            prompt = tok(prompt_text(turn["user"], 0), add_special_tokens=False)["input_ids"]
        else:
            prompt = []
        answer = tok(f" {turn['assistant']}{END_OF_UTTERANCE}", add_special_tokens=False)["input_ids"]
        newline = tok("\n", add_special_tokens=False)["input_ids"]
        if len(ids) + len(prompt) + len(answer) + len(newline) > seq_len:
            if index == 0:
                stats.skip("longer_than_seq_len")
                return None
            stats.turns_cut += len(turns) - index
            break
        ids += prompt + answer + newline
        labels += [IGNORE] * len(prompt) + answer + [IGNORE] * len(newline)
        if weights is not None and turn_weight is not None:
            weights += [0.0] * len(prompt) + [turn_weight[index]] * len(answer) + [0.0] * len(newline)
    stats.samples += 1
    return Encoded(ids, labels, pixel_values, pixel_mask, len(images), weights)


def encoded(processor, rows: Iterable[dict], seq_len: int, max_images: int, stats: EncodeStats) -> Iterator[Encoded]:
    for row in rows:
        sample = encode(processor, row, seq_len, max_images, stats)
        if sample is not None:
            yield sample


def _concat(samples: list[Encoded]) -> Encoded:
    tiles = [s.pixel_values for s in samples if s.pixel_values is not None]
    masks = [s.pixel_attention_mask for s in samples if s.pixel_attention_mask is not None]
    return Encoded(
        [i for s in samples for i in s.input_ids],
        [i for s in samples for i in s.labels],
        torch.cat(tiles) if tiles else None,
        torch.cat(masks) if masks else None,
        sum(s.images for s in samples),
        [w for s in samples for w in (s.weights or [1.0] * len(s.input_ids))]
        if any(s.weights is not None for s in samples)
        else None,
    )


def packed(samples: Iterable[Encoded], seq_len: int, enabled: bool = True) -> Iterator[Encoded]:
    """Greedy packing: consecutive samples share a sequence while they fit in seq_len tokens.
    Attention is not masked between packed samples (as nanoVLM's packing)."""
    if not enabled:
        yield from samples
        return
    pack: list[Encoded] = []
    length = 0
    for sample in samples:
        if pack and length + len(sample.input_ids) > seq_len:
            yield _concat(pack)
            pack, length = [], 0
        pack.append(sample)
        length += len(sample.input_ids)
    if pack:
        yield _concat(pack)


def collate(sequences: list[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch; image tiles padded with all-zero tiles, which Idefics3 skips."""
    width = max(len(s.input_ids) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    labels = torch.full((len(sequences), width), IGNORE, dtype=torch.long)
    attention = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, s in enumerate(sequences):
        input_ids[row, : len(s.input_ids)] = torch.tensor(s.input_ids)
        labels[row, : len(s.labels)] = torch.tensor(s.labels)
        attention[row, : len(s.input_ids)] = 1
    batch = {"input_ids": input_ids, "attention_mask": attention, "labels": labels}
    if any(s.weights is not None for s in sequences):
        weights = torch.zeros((len(sequences), width), dtype=torch.float32)
        for row, s in enumerate(sequences):
            weights[row, : len(s.input_ids)] = torch.tensor(s.weights or [1.0] * len(s.input_ids))
        batch["loss_weights"] = weights
    with_images = [
        (row, s.pixel_values, s.pixel_attention_mask)
        for row, s in enumerate(sequences)
        if s.pixel_values is not None and s.pixel_attention_mask is not None
    ]
    if with_images:
        tiles = max(values.shape[0] for _, values, _ in with_images)
        shape = with_images[0][1].shape[1:]
        pixels = torch.zeros((len(sequences), tiles, *shape), dtype=with_images[0][1].dtype)
        masks = torch.zeros((len(sequences), tiles, *shape[1:]), dtype=torch.bool)
        for row, values, mask in with_images:
            pixels[row, : values.shape[0]] = values
            masks[row, : values.shape[0]] = mask.bool()
        batch["pixel_values"], batch["pixel_attention_mask"] = pixels, masks
    batch["images"] = torch.tensor(sum(s.images for s in sequences))
    return batch


def batches_of(sequences: Iterable[Encoded], batch_size: int, pad_id: int) -> Iterator[dict[str, torch.Tensor]]:
    chunk: list[Encoded] = []
    for sequence in sequences:
        chunk.append(sequence)
        if len(chunk) == batch_size:
            yield collate(chunk, pad_id)
            chunk = []
    if chunk:
        yield collate(chunk, pad_id)
