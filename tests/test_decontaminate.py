"""Embedding and decontamination through Spark with the real SSCD ONNX model and real FAISS."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import yaml
from PIL import Image

from etl import tables
from etl.jobs import decontaminate, embed
from etl.runs import PipelineRun
from etl.stages.text_decontam import benchmark_grams, training_grams
from udfs.words import normalised_words


def photo(name: str) -> Image.Image:
    import skimage.data

    return Image.fromarray(getattr(skimage.data, name)()).convert("RGB")


def encode(image: Image.Image, fmt="PNG", **kw) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kw)
    return buffer.getvalue()


LONG_QUESTION = (
    "According to the chart, which of the four regions recorded the highest rainfall during the month of July in 2019?"
)


@pytest.fixture
def contaminated_corpus(tmp_path):
    """A benchmark of three photos; training holds a resized JPEG copy of one of them, a
    verbatim copy of a benchmark question in a text-only sample, and unrelated photos."""
    data, sources = tmp_path / "data", tmp_path / "sources"
    (data / "img").mkdir(parents=True)
    sources.mkdir()
    for name in ("astronaut", "coffee", "chelsea", "rocket", "camera"):
        (data / "img" / f"{name}.png").write_bytes(encode(photo(name)))
    copy = photo("coffee").resize((450, 300))  # 75 %: SSCD scores such copies about 0.96-0.99
    (data / "img" / "coffee_copy.jpg").write_bytes(encode(copy, "JPEG", quality=90))
    bench = [
        {"qid": "b1", "image": "astronaut.png", "question": "Who is this?", "answer": "An astronaut."},
        {"qid": "b2", "image": "coffee.png", "question": "What drink?", "answer": "Coffee."},
        {"qid": "b3", "image": "chelsea.png", "question": LONG_QUESTION, "answer": "The north."},
    ]
    train = [
        {"image": "coffee_copy.jpg", "question": "Describe the cup.", "answer": "A cup of coffee on a saucer."},
        {"image": "rocket.png", "question": "What is this?", "answer": "A rocket on a launch pad."},
        {"image": "camera.png", "question": "Who holds what?", "answer": "A man holding a camera."},
    ]
    (data / "bench.jsonl").write_text("\n".join(json.dumps(r) for r in bench) + "\n")
    (data / "train.jsonl").write_text("\n".join(json.dumps(r) for r in train) + "\n")
    (data / "chat.jsonl").write_text(
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": LONG_QUESTION.upper().replace(",", " ;")},
                    {"role": "assistant", "content": "The east."},
                ]
            }
        )
        + "\n"
    )
    specs = [
        {
            "name": "bench",
            "format": "vqa_jsonl",
            "location": "bench.jsonl",
            "image_root": "img",
            "subset": "bench",
            "category": "General VQA",
            "benchmark": "toy",
            "fields": {"id": "qid"},
        },
        {
            "name": "train",
            "format": "vqa_jsonl",
            "location": "train.jsonl",
            "image_root": "img",
            "subset": "train",
            "category": "General VQA",
        },
        {
            "name": "chat",
            "format": "sharegpt_jsonl",
            "location": "chat.jsonl",
            "subset": "chat",
            "category": "Text-only",
        },
    ]
    for spec in specs:
        (sources / f"{spec['name']}.yaml").write_text(yaml.safe_dump(spec))
    return {"sources": sources, "data": data}


def test_decontamination_finds_the_copy_and_the_copied_question_only(spark, make_config, contaminated_lakehouse):
    # The corpus after ingest, clean and embed comes from the session's shared lakehouse (a copy).
    config = make_config(
        contaminated_lakehouse["sources"],
        contaminated_lakehouse["data"],
        **{"mlflow__enabled": "false", "decontaminate__policy": "remove", "decontaminate__method": "threshold"},
    )
    run = PipelineRun(spark, config, "test")
    decontaminate.run(run)

    embeddings = tables.read(spark, run.table("image_embeddings"))
    assert embeddings.count() == 6  # 3 benchmark + 3 training images, each once
    vectors = np.array([r["embedding"] for r in embeddings.collect()], dtype=np.float32)
    assert vectors.shape == (6, 512) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-3)

    hits = tables.read(spark, run.table("contamination_hits")).collect()
    image_hits = [h for h in hits if h["method"] == "sscd-faiss-exact"]
    text_hits = [h for h in hits if h["method"] == "text-ngram"]
    assert [(h["subset"], h["benchmark"], h["benchmark_item_id"]) for h in image_hits] == [("train", "toy", "b2")]
    assert image_hits[0]["similarity"] >= 0.95 and image_hits[0]["threshold"] == pytest.approx(0.95)
    assert [(h["subset"], h["benchmark_item_id"]) for h in text_hits] == [("chat", "b3")]
    assert text_hits[0]["image_id"] is None and text_hits[0]["similarity"] == pytest.approx(1.0)

    rates = {r["subset"]: r for r in tables.read(spark, run.table("contamination_rates")).collect()}
    assert (rates["train"]["contaminated_samples"], rates["train"]["samples"]) == (1, 3)
    assert (rates["train"]["contaminated_images"], rates["train"]["images"]) == (1, 3)
    assert rates["chat"]["sample_rate"] == pytest.approx(1.0) and rates["*"]["contaminated_samples"] == 2

    removed = tables.read(spark, run.table("removed_samples")).collect()
    assert sorted(r["subset"] for r in removed) == ["chat", "train"] and all(
        r["reason"] == "contaminated" for r in removed
    )

    # re-running embeds nothing new and adds no hit
    again = PipelineRun(spark, config, "again")
    embed.run(again)
    decontaminate.run(again)
    assert again.reports[0].rows_in == 0
    assert tables.read(spark, run.table("contamination_hits")).count() == len(hits)
    assert tables.read(spark, run.table("removed_samples")).count() == 2


def test_ngrams_normalise_text_and_short_benchmark_texts_match_whole():
    assert normalised_words("Hello, WORLD!  It's 3.5") == ["hello", "world", "it", "s", "3", "5"]
    long = " ".join(f"w{i}" for i in range(15))
    assert len(benchmark_grams(long, 13, 13)) == 3
    assert benchmark_grams("too short to count", 13, 13) == []
    short = "what colour is the large square here"  # 7 words
    assert benchmark_grams(short, 13, 13) == []
    grams = benchmark_grams(short, 13, 5)
    assert len(grams) == 1 and grams[0] in training_grams(f"so tell me {short} please", 13, 5)
    assert grams[0] not in training_grams("what colour is the small square here", 13, 5)
