"""Training-loop throughput reading a pinned gold version's training snapshot, against the same loop
reading the same samples from memory, in the same run (goal: ratio >= 0.8).

    .venv/bin/python bench/train_throughput.py                 # synthetic gold table, tiny model
    .venv/bin/python bench/train_throughput.py --table lakehouse/gold_samples --steps 30

Both variants run the identical model, encode/pack/collate and optimizer steps; only where the rows
come from differs (the snapshot that Spark writes from the Delta table, streamed per epoch as parquet
record batches, or a Python list read beforehand).
Samples per second are averaged over the steps after the first (warm-up).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from etl.config import load_config  # noqa: E402
from etl.release import GOLD_ARROW  # noqa: E402
from etl.schema import GOLD_RATING_AXES  # noqa: E402
from etl.train import data  # noqa: E402
from etl.train.config import load_train_config  # noqa: E402
from etl.train.loop import train_process  # noqa: E402
from etl.train.model import build_model, build_processor  # noqa: E402


def synthetic_gold(path: str, rows: int, seed: int = 0) -> None:
    """Photo-like JPEGs of varied sizes with short VQA turns, in the gold schema."""
    from deltalake import write_deltalake

    rng = np.random.default_rng(seed)
    records = []
    for i in range(rows):
        w, h = int(rng.integers(48, 160)), int(rng.integers(48, 160))
        pixels = (rng.random((h, w, 3)) * 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "JPEG", quality=85)
        records.append(
            {
                "images": [{"bytes": buffer.getvalue(), "path": None}],
                "texts": [
                    {"user": f"What is in picture {i}?", "assistant": f"A noisy picture number {i} of {w}x{h} pixels."}
                ],
                "source": "bench",
                **{f"{a}_ratings": None for a in GOLD_RATING_AXES},
                **{f"{a}_min": None for a in GOLD_RATING_AXES},
                "sample_id": hashlib.sha256(str(i).encode()).hexdigest()[:32],
                "subset": "bench",
                "category": "General VQA",
                "contaminated": False,
                "dup_cluster_id": None,
            }
        )
    write_deltalake(path, pa.Table.from_pylist(records, schema=GOLD_ARROW), mode="overwrite")


def measure(config, processor, rows_for_epoch) -> float:
    rates = []
    model = build_model(config, processor)
    train_process(config, processor, model, rows_for_epoch, on_step=lambda m: rates.append(m.samples_per_s))
    return statistics.mean(rates[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", help="an existing gold_samples table (default: a synthetic one)")
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--rounds", type=int, default=2, help="memory/Delta pairs, interleaved")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        path = args.table or f"{tmp}/gold_samples"
        if not args.table:
            synthetic_gold(path, args.rows)
        from etl.session import build_session, load_profile
        from etl.train import snapshot

        spark = build_session(load_profile("local"))
        table = str(Path(path).resolve()) if "://" not in path else path
        source = data.GoldSource(table, snapshot.latest_version(spark, table))
        source = snapshot.write_snapshot(spark, source, 1, f"{tmp}/snapshots")
        config = load_train_config(
            args.config, [f"output_dir={tmp}/out", f"max_steps={args.steps}", "checkpoint_every=0"]
        )
        processor = build_processor(config, load_config().clean.tokenizer)
        memory = list(data.snapshot_rows(source))  # read once, before timing
        started = time.perf_counter()
        rates = {"memory": [], "snapshot": []}
        for _ in range(args.rounds):  # interleaved, so load drifts on a shared machine hit both
            rates["memory"].append(measure(config, processor, lambda epoch: memory))
            rates["snapshot"].append(measure(config, processor, lambda epoch: data.snapshot_rows(source)))
        from_memory, from_snapshot = statistics.mean(rates["memory"]), statistics.mean(rates["snapshot"])
        elapsed = time.perf_counter() - started
    print(
        f"gold rows {len(memory)}, {args.rounds} x {args.steps} steps per variant of {config.name} "
        f"(batch {config.batch_size} x accum {config.grad_accum}, seq {config.seq_len}), {elapsed:.0f} s in all"
    )
    print(f"from memory:       {from_memory:8.1f} samples/s")
    print(f"from the snapshot: {from_snapshot:8.1f} samples/s")
    print(f"ratio snapshot / memory: {from_snapshot / from_memory:.2f} (goal >= 0.8)")


if __name__ == "__main__":
    main()
