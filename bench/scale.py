"""Scale benchmark: every pipeline stage on a synthetic corpus of N samples, at several N.

    .venv/bin/python bench/scale.py [--sizes 10000,100000,1000000] [--workdir DIR] [--embed-real-max 2000]
                                    [--rate-max 1000000] [--set key=value ...]

The corpus (`generate`) is deterministic and comes in the formats real sources come in: one LLaVA
JSON array file (40% of the samples), FineVision-layout parquet shards (25%), OpenAI-messages
JSONL (20%) and WebDataset tars (15%), plus a benchmark set (vqa_jsonl, 1% of N, at least 20
items). Images are small and distinct (48x48 JPEGs of random colour fields, about 1-2 KB); known
shares are planted: 5% exact duplicates (the bytes of another sample's image), 5% near-duplicates
(another sample's image, brighter and re-encoded) and 1% benchmark copies (a benchmark item's
image and question). Turns have realistic lengths (1-3 turns; questions 8-30 words, answers
5-120 words).

Each size runs in a fresh process (its own Spark session, so the driver's peak RSS is that size's)
through the project's own jobs: ingest, clean, embed, decontaminate, dedup, rate, export, analyze.
Two stages are bound by a model rather than the data path:
- embed runs the real SSCD stage up to --embed-real-max samples; above, the embeddings are
  written through the project's table writer (`etl.tables.merge_insert`, the embed job's schema
  and constraints) from a deterministic 512-d generator with the same planted structure: an 8x8
  thumbnail of the image, centred, times a fixed random projection (exact copies share a vector,
  near-duplicates land at cosine > 0.95, unrelated images far below);
- rate rates every turn (`max_turns_per_subset: null`) with the endpoint backend against a loopback
  server (aiohttp, in its own process) that answers at once, so the request machinery and the data
  path are measured; it runs
  up to --rate-max samples, in commits of 100,000 ratings (`rate.commit_rows`; the default 2,000
  suits a real judge, for which a chunk runs minutes).

Per stage and size it prints rows in, seconds, rows per second, the driver's peak RSS (the Python
driver process; the JVM's is printed beside it: in local mode the JVM also hosts the executors),
and Spark's shuffle write bytes (from the Spark UI's REST API, summed over the stage's jobs); then
per stage the time exponent between consecutive sizes, log(t2/t1)/log(n2/n1). The last line is one
JSON object: {"sizes": [...], "stages": {"<stage>": {"seconds": [...], "exponent": x}},
"driver_peak_rss_mb": [...]} (exponent between the last two sizes).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from PIL import Image

SHARES = {"llava": 0.40, "parquet": 0.25, "sharegpt": 0.20, "webdataset": 0.15}
PLANTED = {"benchmark_copy": 0.01, "exact_duplicate": 0.05, "near_duplicate": 0.05, "template": 0.10}
NORMAL, BENCH_COPY, EXACT_DUP, NEAR_DUP, TEMPLATE = 0, 1, 2, 3, 4
BENCH_TEMPLATE_SHARE = 0.3  # benchmark items that are charts, documents or GUI screens (as FineVision's are)
IMAGE_SIDE = 48
PARQUET_ROWS, PARQUET_ROW_GROUP, TAR_SAMPLES = 20_000, 2_000, 10_000
BENCHMARK = "synthbench"
_SYLLABLES = ["ka", "lo", "mi", "ne", "ra", "to", "su", "vi", "de", "po", "an", "el", "or", "us", "ti", "ba"]
WORDS = [a + b + c for a in _SYLLABLES for b in _SYLLABLES for c in ("", "n", "s")][:600]


# --- the corpus ------------------------------------------------------------------------------------


def _pixels(seed: int, namespace: int, index: int) -> np.ndarray:
    """A 48x48 RGB field: a random 6x6 colour grid, smoothly upscaled (distinct per index)."""
    grid = np.random.default_rng([seed, namespace, index]).integers(0, 256, (6, 6, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(grid).resize((IMAGE_SIDE, IMAGE_SIDE), Image.BILINEAR))


def _jpeg(pixels: np.ndarray, quality: int = 85) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _words(rng: np.random.Generator, low: int, high: int) -> str:
    return " ".join(WORDS[i] for i in rng.integers(0, len(WORDS), int(rng.integers(low, high + 1))))


def template_image(seed: int, namespace: int, index: int) -> bytes:
    """A chart, a document page or a phone screen from the sample corpus' generators (etl/samples):
    every one of a kind shares its template (axes and margins, page layout, app chrome) and differs
    in its data, text or rows, as FineVision's chart, document and GUI subsets do. Namespace 0
    draws the training side's themes, 1 the benchmark's."""
    import random

    from etl.samples import charts, documents, gui

    rng = np.random.default_rng([seed, 7, namespace, index])
    kind = index % 3
    if kind == 0:
        themes, metrics = (
            (charts.TRAIN_THEMES, charts.TRAIN_METRICS)
            if namespace == 0
            else (charts.BENCH_THEMES, charts.BENCH_METRICS)
        )
        return charts.render(charts.make_chart(rng, themes, metrics))
    if kind == 1:
        buffer = io.BytesIO()
        documents.render(rng, documents.make_text(rng)).save(buffer, format="PNG")
        return buffer.getvalue()
    screen_rng = random.Random(int(rng.integers(2**31)))
    return gui.draw_png(gui._mobile_app(screen_rng.choice(gui.APPS), screen_rng))


class Plan:
    """Which sample is what: kinds, the sample or benchmark item each planted one copies, counts."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed = n, seed
        self.bench_items = max(20, n // 100)
        counts = {kind: round(n * share) for kind, share in PLANTED.items()}
        order = np.random.default_rng([seed, 2]).permutation(n)
        self.kind = np.zeros(n, dtype=np.int8)
        self.source = np.full(n, -1, dtype=np.int64)
        cut = 0
        for kind, code in (
            ("benchmark_copy", BENCH_COPY),
            ("exact_duplicate", EXACT_DUP),
            ("near_duplicate", NEAR_DUP),
        ):
            self.kind[order[cut : cut + counts[kind]]] = code
            cut += counts[kind]
        # same-template look-alikes (not copies): their own images, so they are normal samples otherwise
        self.kind[order[cut : cut + counts["template"]]] = TEMPLATE
        base = np.sort(order[cut + counts["template"] :])  # the normal samples, which planted ones copy
        rng = np.random.default_rng([seed, 3])
        planted = order[:cut]
        bench = self.kind[planted] == BENCH_COPY
        self.source[planted[bench]] = rng.integers(0, self.bench_items, int(bench.sum()))
        self.source[planted[~bench]] = base[rng.integers(0, len(base), int((~bench).sum()))]
        self.counts = counts
        bounds = np.cumsum([0] + [round(n * share) for share in SHARES.values()])
        bounds[-1] = n
        self.ranges = {name: (int(bounds[i]), int(bounds[i + 1])) for i, name in enumerate(SHARES)}

    def image(self, i: int) -> bytes:
        kind, source = self.kind[i], int(self.source[i])
        if kind == BENCH_COPY:
            return self.bench_image(source)
        if kind == EXACT_DUP:
            return _jpeg(_pixels(self.seed, 0, source))
        if kind == NEAR_DUP:  # brighter, a little noise (so two copies of one image differ), re-encoded
            noise = np.random.default_rng([self.seed, 6, i]).integers(-2, 3, (IMAGE_SIDE, IMAGE_SIDE, 3))
            brighter = np.clip(_pixels(self.seed, 0, source).astype(np.int16) + 12 + noise, 0, 255).astype(np.uint8)
            return _jpeg(brighter, quality=80)
        if kind == TEMPLATE:
            return template_image(self.seed, 0, i)
        return _jpeg(_pixels(self.seed, 0, i))

    def bench_image(self, b: int) -> bytes:
        if b < round(self.bench_items * BENCH_TEMPLATE_SHARE):
            return template_image(self.seed, 1, b)
        return _jpeg(_pixels(self.seed, 1, b))

    def bench_turn(self, b: int) -> tuple[str, str]:
        rng = np.random.default_rng([self.seed, 4, b])
        return _words(rng, 16, 24) + "?", _words(rng, 1, 4)

    def turns(self, i: int) -> list[tuple[str, str]]:
        rng = np.random.default_rng([self.seed, 5, i])
        turns = [(_words(rng, 8, 30) + "?", _words(rng, 5, 120) + ".") for _ in range(int(rng.integers(1, 4)))]
        if self.kind[i] == BENCH_COPY:
            turns[0] = self.bench_turn(int(self.source[i]))
        return turns


def _write_image(folder: Path, name: str, data: bytes) -> str:
    (folder / name).write_bytes(data)
    return name


def generate(root: Path, n: int, seed: int = 0) -> dict:
    """Write the corpus of n samples and its source specs under root; returns the manifest."""
    plan = Plan(n, seed)
    data, specs, images = root / "data", root / "sources", root / "data" / "images"
    for folder in (data, specs, images, images / "bench"):
        folder.mkdir(parents=True, exist_ok=True)
    category = "General VQA"
    spec_list = []

    start, end = plan.ranges["llava"]
    with open(data / "llava.json", "w", encoding="utf-8") as out:
        out.write("[\n")
        for i in range(start, end):
            conversations = []
            for k, (q, a) in enumerate(plan.turns(i)):
                conversations += [
                    {"from": "human", "value": ("<image>\n" if k == 0 else "") + q},
                    {"from": "gpt", "value": a},
                ]
            record = {
                "id": f"llava-{i}",
                "image": _write_image(images, f"{i}.jpg", plan.image(i)),
                "conversations": conversations,
            }
            out.write(("" if i == start else ",\n") + json.dumps(record))
        out.write("\n]\n")
    spec_list.append({"name": "llava", "format": "llava_json", "location": "llava.json", "image_root": "images"})

    start, end = plan.ranges["parquet"]
    (data / "parquet").mkdir(exist_ok=True)
    schema = pa.schema(
        [
            ("images", pa.list_(pa.struct([("bytes", pa.binary()), ("path", pa.string())]))),
            ("texts", pa.list_(pa.struct([("user", pa.string()), ("assistant", pa.string())]))),
            ("source", pa.string()),
        ]
    )
    for shard, first in enumerate(range(start, end, PARQUET_ROWS)):
        rows = range(first, min(first + PARQUET_ROWS, end))
        table = pa.Table.from_pylist(
            [
                {
                    "images": [{"bytes": plan.image(i), "path": None}],
                    "texts": [{"user": q, "assistant": a} for q, a in plan.turns(i)],
                    "source": "synth_parquet",
                }
                for i in rows
            ],
            schema=schema,
        )
        pq.write_table(table, data / "parquet" / f"train-{shard:05d}.parquet", row_group_size=PARQUET_ROW_GROUP)
    spec_list.append({"name": "parquet", "format": "hf_parquet", "location": "parquet"})

    start, end = plan.ranges["sharegpt"]
    with open(data / "chat.jsonl", "w", encoding="utf-8") as out:
        for i in range(start, end):
            messages = []
            for k, (q, a) in enumerate(plan.turns(i)):
                content = (
                    [{"type": "image", "image": _write_image(images, f"{i}.jpg", plan.image(i))}] if k == 0 else []
                )
                messages += [
                    {"role": "user", "content": [*content, {"type": "text", "text": q}]},
                    {"role": "assistant", "content": a},
                ]
            out.write(json.dumps({"id": f"chat-{i}", "messages": messages}) + "\n")
    spec_list.append({"name": "sharegpt", "format": "sharegpt_jsonl", "location": "chat.jsonl", "image_root": "images"})

    start, end = plan.ranges["webdataset"]
    (data / "wds").mkdir(exist_ok=True)
    for shard, first in enumerate(range(start, end, TAR_SAMPLES)):
        with tarfile.open(data / "wds" / f"shard-{shard:05d}.tar", "w", format=tarfile.USTAR_FORMAT) as tar:
            for i in range(first, min(first + TAR_SAMPLES, end)):
                q, a = plan.turns(i)[0]  # a WebDataset sample holds one question
                for ext, payload in (
                    ("jpg", plan.image(i)),
                    ("json", json.dumps({"question": q, "answer": a}).encode()),
                ):
                    info = tarfile.TarInfo(f"{i:08d}.{ext}")
                    info.size, info.mtime = len(payload), 0
                    tar.addfile(info, io.BytesIO(payload))
    spec_list.append({"name": "webdataset", "format": "webdataset", "location": "wds"})

    with open(data / "bench.jsonl", "w", encoding="utf-8") as out:
        for b in range(plan.bench_items):
            q, a = plan.bench_turn(b)
            name = _write_image(images / "bench", f"{b}.jpg", plan.bench_image(b))
            out.write(json.dumps({"qid": f"b{b}", "image": name, "question": q, "answer": a}) + "\n")
    spec_list.append(
        {
            "name": "bench",
            "format": "vqa_jsonl",
            "location": "bench.jsonl",
            "image_root": "images/bench",
            "benchmark": BENCHMARK,
            "fields": {"id": "qid"},
        }
    )

    for spec in spec_list:
        spec.setdefault("subset", f"synth_{spec['name']}")
        spec.setdefault("category", category)
        (specs / f"{spec['name']}.yaml").write_text(yaml.safe_dump(spec))
    manifest = {
        "samples": n,
        "seed": seed,
        "benchmark_items": plan.bench_items,
        "planted": plan.counts,
        "formats": {name: end - start for name, (start, end) in plan.ranges.items()},
        "near_duplicates": [[int(i), int(plan.source[i])] for i in np.flatnonzero(plan.kind == NEAR_DUP)[:50]],
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


# --- the synthetic embedding and the loopback judge -------------------------------------------------


def synthetic_embeddings(image_bytes: list[bytes]) -> np.ndarray:
    """Deterministic 512-d unit vectors: an 8x8 thumbnail, centred, times a fixed projection."""
    projection = np.random.default_rng(1234).standard_normal((192, 512)).astype(np.float32)
    thumbs = np.stack(
        [
            np.asarray(Image.open(io.BytesIO(data)).convert("RGB").resize((8, 8), Image.BOX), dtype=np.float32).ravel()
            for data in image_bytes
        ]
    )
    vectors = (thumbs - thumbs.mean(axis=1, keepdims=True)) @ projection
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-6)


def write_synthetic_embeddings(run) -> None:
    """The embed stage's output, written by the project's writer from `synthetic_embeddings`."""
    import pandas as pd

    from etl import tables
    from etl.jobs.embed import EMBEDDING_CONSTRAINTS
    from etl.schema import IMAGE_EMBEDDINGS
    from etl.specs import embedder_spec
    from etl.stages.embed import images_to_embed
    from udfs.sscd import model_id

    model = model_id(embedder_spec(run.config))
    with run.stage("embed") as report:
        frames = [run.read_input(report, "silver_samples"), run.read_input(report, "benchmark_items")]
        images = images_to_embed(frames, None, model)  # the embed stage's own selection of images

        def embed(batches):
            for batch in batches:
                vectors = synthetic_embeddings(list(batch["bytes"]))
                yield pd.DataFrame({"image_id": batch["image_id"], "model_id": model, "embedding": list(vectors)})

        embedded = images.select("image_id", "bytes").mapInPandas(embed, IMAGE_EMBEDDINGS)
        report.rows_in = report.rows_out = images.count()
        report.output_versions["image_embeddings"] = tables.merge_insert(
            run.spark,
            run.table("image_embeddings"),
            embedded,
            ["image_id", "model_id"],
            run.commit("embed"),
            IMAGE_EMBEDDINGS,
            EMBEDDING_CONSTRAINTS,
        )


INSTANT_VERDICT = json.dumps(
    {
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": "4"},
                "logprobs": {
                    "content": [
                        {
                            "token": "4",
                            "logprob": -0.2,
                            "top_logprobs": [{"token": "4", "logprob": -0.2}, {"token": "5", "logprob": -1.8}],
                        }
                    ]
                },
            }
        ]
    }
).encode()


def serve_instant_verdicts() -> None:
    """aiohttp (C-accelerated HTTP parsing, one event loop) in a process of its own; prints its port.

    With Python's ThreadingHTTPServer in the driver, the loopback server itself capped the rate
    stage: measured side by side (two client processes of 16 threads each, the way the rate stage
    calls it), it served about 700 requests a second against this server's 3,700-4,000, so the
    bench timed the server, not the pipeline. Exits when its parent does (EOF on stdin)."""
    import asyncio

    from aiohttp import web

    async def answer(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=INSTANT_VERDICT, content_type="application/json")

    def exit_with_the_parent() -> None:  # stdin is the parent's pipe: EOF when the parent is gone
        sys.stdin.read()
        os._exit(0)

    threading.Thread(target=exit_with_the_parent, daemon=True).start()

    async def serve() -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", answer)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        print(runner.addresses[0][1], flush=True)
        await asyncio.Event().wait()

    asyncio.run(serve())


class InstantJudge:
    """A chat-completions server on loopback that answers "4" at once, with top logprobs."""

    def __init__(self):
        command = [sys.executable, str(Path(__file__).resolve()), "--instant-judge"]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        port = self.process.stdout.readline().strip()
        if not port.isdigit():
            self.process.kill()
            raise RuntimeError(f"the loopback judge did not start (printed {port!r})")
        self.base_url = f"http://127.0.0.1:{port}/v1"

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


# --- measuring one size -------------------------------------------------------------------------------


def _peak_rss_mb(pid: int | str = "self") -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _shuffle_bytes(ui_url: str | None, job_group: str) -> int | None:
    """Shuffle write bytes of every Spark stage of the jobs in one job group (the UI's REST API)."""
    if not ui_url:
        return None
    try:

        def get(path):
            with urllib.request.urlopen(f"{ui_url}/api/v1/{path}", timeout=30) as response:
                return json.load(response)

        app = get("applications")[0]["id"]
        stage_ids = {
            s for job in get(f"applications/{app}/jobs") if job.get("jobGroup") == job_group for s in job["stageIds"]
        }
        return sum(
            s.get("shuffleWriteBytes", 0) for s in get(f"applications/{app}/stages") if s["stageId"] in stage_ids
        )
    except (OSError, ValueError, KeyError, IndexError):
        return None


def measure(
    root: Path,
    n: int,
    embed_real_max: int,
    rate_max: int,
    sets: list[str],
    only: list[str] | None = None,
    methods: list[str] | None = None,
) -> dict:
    """Run every stage (or the stages in `only`, on the tables an earlier run left) on the corpus
    under root (in this process); per stage: rows, seconds, peaks, the stage's counters. With
    `methods`, decontaminate runs once per decontamination method, one after the other on the same
    tables (`decontaminate[<method>]`); the later stages read the first method's hits."""
    from etl.config import load_config
    from etl.jobs import STAGES
    from etl.runs import PipelineRun
    from etl.session import build_session

    judge = InstantJudge()
    overrides = [
        f"lakehouse={root / 'lake'}",
        f"data_root={root / 'data'}",
        f"sources_dir={root / 'sources'}",
        "mlflow.enabled=false",
        "rate.text_judge=qwen3_32b",
        f"rate.judges.qwen3_32b.base_url={judge.base_url}",
        "rate.judges.qwen3_32b.extra_body={}",
        "rate.max_turns_per_subset=null",
        # chunks sized for the loopback judge: with the default 2000, a chunk of a real judge runs
        # minutes, one of the loopback judge a second, and the bench would time commits, not data
        "rate.commit_rows=100000",
        *sets,
    ]
    config = load_config(overrides=overrides)
    spark = build_session(
        "local", {"spark.ui.enabled": "true", "spark.sql.shuffle.partitions": str(config.shuffle_partitions)}
    )
    ui_url = spark.sparkContext.uiWebUrl
    jvm_pid = getattr(getattr(spark.sparkContext._gateway, "proc", None), "pid", None)
    run = PipelineRun(spark, config, "bench-scale")
    results = {}
    try:
        for stage in STAGES:
            if only and stage.name not in only:
                continue
            note = ""
            if stage.name == "decontaminate" and methods:
                for method in methods:
                    method_run = PipelineRun(
                        spark, load_config(overrides=[*overrides, f"decontaminate.method={method}"]), f"bench-{method}"
                    )
                    started = time.perf_counter()
                    try:
                        stage.runner()(method_run)
                    finally:
                        method_run.close()
                    name = f"decontaminate[{method}]"
                    results[name] = _stage_figures(method_run, time.perf_counter() - started, f"method {method}")
                    results[name]["shuffle_bytes"] = _shuffle_bytes(ui_url, f"{method_run.run_id}-{stage.name}")
                    print(
                        f"[{n}] {name}: {results[name]['rows']} rows in {results[name]['seconds']:.1f} s",
                        file=sys.stderr,
                    )
                continue
            started = time.perf_counter()
            if stage.name == "embed" and n > embed_real_max:
                write_synthetic_embeddings(run)
                note = "synthetic vectors"
            elif stage.name == "rate" and n > rate_max:
                results[stage.name] = {"skipped": f"above --rate-max {rate_max}"}
                continue
            else:
                stage.runner()(run)
                note = "loopback judge, every turn" if stage.name == "rate" else ""
            seconds = time.perf_counter() - started
            report = run.reports[-1]
            print(f"[{n}] {stage.name}: {report.rows_in} rows in {seconds:.1f} s {note}", file=sys.stderr, flush=True)
            results[stage.name] = _stage_figures(run, seconds, note, jvm_pid)
            results[stage.name]["shuffle_bytes"] = _shuffle_bytes(ui_url, f"{run.run_id}-{stage.name}")
    finally:
        run.close()
        spark.stop()
        judge.close()
    return {"size": n, "stages": results, "driver_peak_rss_mb": _peak_rss_mb()}


def _stage_figures(run, seconds: float, note: str, jvm_pid: int | None = None) -> dict:
    report = run.reports[-1]
    return {
        "rows": report.rows_in,
        "seconds": seconds,
        "note": note,
        "driver_peak_rss_mb": _peak_rss_mb(),
        "jvm_peak_rss_mb": _peak_rss_mb(jvm_pid) if jvm_pid else None,
        "counters": dict(report.counters),
    }


# --- the report ---------------------------------------------------------------------------------------


def exponent(sizes: list[int], seconds: list[float | None]) -> float | None:
    if len(sizes) < 2 or seconds[-1] is None or seconds[-2] is None or min(seconds[-2:]) <= 0:
        return None
    return math.log(seconds[-1] / seconds[-2]) / math.log(sizes[-1] / sizes[-2])


def report(results: list[dict]) -> dict:
    sizes = [r["size"] for r in results]
    stage_names = list(dict.fromkeys(name for r in results for name in r["stages"]))
    print(
        f"{'stage':<14}{'size':>10}{'rows':>11}{'seconds':>10}{'rows/s':>10}{'driver MB':>11}{'JVM MB':>9}"
        f"{'shuffle MB':>12}  note"
    )
    summary = {}
    for name in stage_names:
        seconds = []
        for r in results:
            m = r["stages"].get(name, {})
            if "seconds" not in m:
                seconds.append(None)
                print(f"{name:<14}{r['size']:>10}  {m.get('skipped', 'not run')}")
                continue
            seconds.append(m["seconds"])
            rate = (m["rows"] or 0) / m["seconds"] if m["seconds"] else 0
            shuffle = "" if m["shuffle_bytes"] is None else f"{m['shuffle_bytes'] / 2**20:.1f}"
            jvm = "" if m["jvm_peak_rss_mb"] is None else f"{m['jvm_peak_rss_mb']:.0f}"
            print(
                f"{name:<14}{r['size']:>10}{m['rows'] or 0:>11}{m['seconds']:>10.1f}{rate:>10.0f}"
                f"{m['driver_peak_rss_mb'] or 0:>11.0f}{jvm:>9}{shuffle:>12}  {m['note']}"
            )
        exponents = [exponent(sizes[: k + 2], seconds[: k + 2]) for k in range(len(sizes) - 1)]
        shown = ", ".join("-" if e is None else f"{e:.2f}" for e in exponents)
        print(f"{'':<14}time exponent between consecutive sizes: {shown}")
        summary[name] = {
            "seconds": [None if s is None else round(s, 2) for s in seconds],
            "exponent": None if not exponents or exponents[-1] is None else round(exponents[-1], 3),
        }
    decontaminations = [name for name in stage_names if name.startswith("decontaminate")]
    print(f"{'decontaminate':<26}{'size':>10}{'seconds':>10}{'candidate pairs':>17}{'pairs verified':>16}{'hits':>8}")
    for name in decontaminations:
        for r in results:
            m = r["stages"].get(name, {})
            if "seconds" in m:
                counters = m.get("counters") or {}
                hits = sum(
                    v for k, v in counters.items() if k.startswith("hits.") and not k.startswith("hits.decided_by")
                )
                candidates, verified = counters.get("pairs.candidates", "-"), counters.get("pairs.verified", "-")
                print(f"{name:<26}{r['size']:>10}{m['seconds']:>10.1f}{candidates:>17}{verified:>16}{hits:>8}")
    if "decontaminate[threshold]" in stage_names and "decontaminate[verified]" in stage_names:
        for r in results:
            pair = [r["stages"].get(f"decontaminate[{m}]", {}).get("seconds") for m in ("threshold", "verified")]
            if None not in pair and pair[0]:
                print(f"verified / threshold at {r['size']}: {pair[1] / pair[0]:.2f}x")
    final = {
        "sizes": sizes,
        "stages": summary,
        "driver_peak_rss_mb": [
            None if r["driver_peak_rss_mb"] is None else round(r["driver_peak_rss_mb"], 1) for r in results
        ],
    }
    print(json.dumps(final))
    return final


def _earlier_result(root: Path, settings: dict) -> dict | None:
    """The figures a run with the same settings left in `root`, if any."""
    path = root / "result.json"
    if not path.exists():
        return None
    result = json.loads(path.read_text())
    return result if result.pop("settings", None) == settings else None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--workdir", type=Path, default=Path(".cache/bench-scale"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--embed-real-max", type=int, default=2000, help="largest size embedded by the real SSCD stage")
    parser.add_argument("--rate-max", type=int, default=1_000_000, help="largest size the rate stage runs at")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="pipeline config override")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="take a size's figures from its result.json of an earlier run with the same settings instead of rerunning it",
    )
    parser.add_argument(
        "--stages",
        help="rerun only these stages (comma-separated) on the lakehouse an earlier run of the size left, "
        "keeping that run's figures for the other stages (e.g. to measure one stage after a change)",
    )
    parser.add_argument(
        "--methods",
        help="run decontaminate once per decontamination method (comma-separated, e.g. threshold,verified) "
        "and report each one's seconds, candidate pairs and pairs verified, and their ratio",
    )
    parser.add_argument("--one-size", type=int, help=argparse.SUPPRESS)  # the child process of one size
    parser.add_argument("--instant-judge", action="store_true", help=argparse.SUPPRESS)  # InstantJudge's process
    args = parser.parse_args(argv)
    if args.instant_judge:
        serve_instant_verdicts()
        return
    if args.one_size:
        only = args.stages.split(",") if args.stages else None
        methods = args.methods.split(",") if args.methods else None
        result = measure(
            args.workdir / str(args.one_size),
            args.one_size,
            args.embed_real_max,
            args.rate_max,
            args.sets,
            only,
            methods,
        )
        print("RESULT " + json.dumps(result))
        return
    if args.stages:
        from etl.jobs import STAGES

        unknown = set(args.stages.split(",")) - {stage.name for stage in STAGES}
        if unknown:
            raise SystemExit(f"--stages: no stage named {', '.join(sorted(unknown))}")
    # The clean stage converts the tokenizer from its GGUF package once per checkout, loading
    # transformers (about 900 MB): done here, so no size's driver peak RSS carries that one-time cost.
    from etl.config import load_config
    from etl.specs import rules_from

    rules_from(load_config())
    results = []
    for n in (int(s) for s in args.sizes.split(",")):
        root = args.workdir / str(n)
        settings = {
            "seed": args.seed,
            "embed_real": n <= args.embed_real_max,
            "rate": n <= args.rate_max,
            "sets": args.sets,
            "template_share": PLANTED["template"],
        }
        earlier = _earlier_result(root, settings) if args.reuse or args.stages else None
        if args.stages and (earlier is None or not (root / "lake").is_dir()):
            raise SystemExit(
                f"--stages needs an earlier run of size {n} with the same settings (its result.json and lake)"
            )
        if earlier is not None and not args.stages:
            print(f"size {n}: figures of an earlier run reused from {root / 'result.json'}", flush=True)
            results.append(earlier)
            continue
        if (
            not (root / "manifest.json").exists()
            or json.loads((root / "manifest.json").read_text())["seed"] != args.seed
            or "template" not in json.loads((root / "manifest.json").read_text())["planted"]
        ):
            started = time.perf_counter()
            generate(root, n, args.seed)
            print(f"generated {n} samples under {root} in {time.perf_counter() - started:.0f} s", flush=True)
        if not args.stages:
            shutil.rmtree(root / "lake", ignore_errors=True)
        command = [
            sys.executable,
            __file__,
            "--one-size",
            str(n),
            "--workdir",
            str(args.workdir),
            "--embed-real-max",
            str(args.embed_real_max),
            "--rate-max",
            str(args.rate_max),
            *(f"--set={s}" for s in args.sets),
            *([f"--stages={args.stages}"] if args.stages else []),
            *([f"--methods={args.methods}"] if args.methods else []),
        ]
        child = subprocess.run(
            command, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(Path.cwd())}
        )
        lines = [line for line in child.stdout.splitlines() if line.startswith("RESULT ")]
        if child.returncode or not lines:
            raise SystemExit(f"size {n} failed (exit {child.returncode}); see the output above")
        result = json.loads(lines[-1].removeprefix("RESULT "))
        if earlier is not None:  # --stages: the rerun stages' figures replace the earlier run's
            result = {**earlier, "stages": {**earlier["stages"], **result["stages"]}}
        results.append(result)
        (root / "result.json").write_text(json.dumps({**results[-1], "settings": settings}))
        print(f"size {n} done: {root / 'result.json'}", flush=True)
    report(results)


if __name__ == "__main__":
    main()
