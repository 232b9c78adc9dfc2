"""bench/scale.py's corpus generator: deterministic, in the stated formats, with the stated shares
of exact duplicates, near-duplicates, benchmark copies and same-template charts, documents and
screens (read back from the files, no Spark)."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

SPEC = importlib.util.spec_from_file_location("bench_scale", Path(__file__).parents[1] / "bench" / "scale.py")
scale = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(scale)

N = 400
PNG = b"\x89PNG"


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def training_samples(data: Path) -> list[tuple[str, bytes, str]]:
    """(format, image bytes, first question) of every training sample, read from the files."""
    out = []
    for record in json.loads((data / "llava.json").read_text()):
        question = record["conversations"][0]["value"].removeprefix("<image>\n")
        out.append(("llava", (data / "images" / record["image"]).read_bytes(), question))
    for path in sorted((data / "parquet").glob("*.parquet")):
        for row in pq.read_table(path).to_pylist():
            out.append(("parquet", row["images"][0]["bytes"], row["texts"][0]["user"]))
    for line in (data / "chat.jsonl").read_text().splitlines():
        parts = json.loads(line)["messages"][0]["content"]
        image = next(p["image"] for p in parts if p["type"] == "image")
        out.append(
            ("sharegpt", (data / "images" / image).read_bytes(), next(p["text"] for p in parts if p["type"] == "text"))
        )
    for path in sorted((data / "wds").glob("*.tar")):
        with tarfile.open(path) as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
        for name in sorted(n for n in members if n.endswith(".jpg")):
            out.append(("webdataset", members[name], json.loads(members[name[:-4] + ".json"])["question"]))
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("scale")
    manifest = scale.generate(root / "a", N, seed=7)
    return root, manifest


def test_the_generator_is_deterministic(corpus, tmp_path):
    root, manifest = corpus
    assert scale.generate(tmp_path / "b", N, seed=7) == manifest
    assert tree_digest(tmp_path / "b") == tree_digest(root / "a")
    assert tree_digest(scale.generate(tmp_path / "c", N, seed=8) and tmp_path / "c") != tree_digest(root / "a")


def test_the_corpus_has_the_stated_formats_and_planted_shares(corpus):
    root, manifest = corpus
    data = root / "a" / "data"
    samples = training_samples(data)
    formats = {name: sum(1 for f, _, _ in samples if f == name) for name in scale.SHARES}
    assert formats == {name: round(N * share) for name, share in scale.SHARES.items()} and len(samples) == N
    bench = [json.loads(line) for line in (data / "bench.jsonl").read_text().splitlines()]
    bench_images = {(data / "images" / "bench" / b["image"]).read_bytes() for b in bench}
    bench_questions = {b["question"] for b in bench}
    assert len(bench) == manifest["benchmark_items"] and len(bench_images) == len(bench)

    copies = [(image, question) for _, image, question in samples if image in bench_images]
    assert len(copies) == round(N * scale.PLANTED["benchmark_copy"])
    assert all(question in bench_questions and len(question.split()) >= 13 for _, question in copies)

    # the template share: charts, documents and phone screens (PNG), each its own image, as are
    # the benchmark's first 30% of items
    templates = [image for _, image, _ in samples if image not in bench_images and image.startswith(PNG)]
    assert len(templates) == len(set(templates)) == round(N * scale.PLANTED["template"])
    bench_templates = [b for b in bench_images if b.startswith(PNG)]
    assert len(bench_templates) == round(len(bench) * scale.BENCH_TEMPLATE_SHARE)
    kinds = [Image.open(io.BytesIO(image)).size for image in templates]
    assert (384, 288) in kinds and (360, 640) in kinds  # charts and phone screens among them, and documents:
    assert len(set(kinds)) > 2

    counts: dict[bytes, int] = {}
    for _, image, _ in samples:
        if image not in bench_images and not image.startswith(PNG):
            counts[image] = counts.get(image, 0) + 1
    assert sum(c - 1 for c in counts.values()) == round(N * scale.PLANTED["exact_duplicate"])
    assert all(2_000 > len(image) > 500 for image in counts)  # small images of a few KB at most

    # near-duplicates: distinct bytes, but their synthetic embeddings are close; unrelated images are far
    images = [image for _, image, _ in samples]
    pairs = manifest["near_duplicates"]
    assert len(pairs) == round(N * scale.PLANTED["near_duplicate"])
    vectors = scale.synthetic_embeddings([images[i] for pair in pairs for i in pair]).reshape(len(pairs), 2, 512)
    assert all(images[i] != images[j] for i, j in pairs)
    assert (np.einsum("pd,pd->p", vectors[:, 0], vectors[:, 1]) > 0.97).all()
    near = {images[i] for i, _ in pairs}
    unrelated = scale.synthetic_embeddings([image for image in counts if image not in near][:150])
    similarity = unrelated @ unrelated.T
    assert similarity[np.triu_indices(len(unrelated), 1)].max() < 0.9


def test_turns_have_realistic_lengths(corpus):
    root, _ = corpus
    for record in json.loads((root / "a" / "data" / "llava.json").read_text()):
        turns = record["conversations"]
        assert 2 <= len(turns) <= 6
        assert all(5 <= len(t["value"].split()) <= 125 for t in turns)


def test_the_loopback_judge_answers_the_endpoint_backend_with_a_score():
    from udfs.judge import JudgeRequest, JudgeSpec, OpenAIChatBackend

    judge = scale.InstantJudge()
    try:
        backend = OpenAIChatBackend(JudgeSpec("openai", "instant", base_url=judge.base_url, max_retries=0))
        verdicts = backend.rate([JudgeRequest(f"Rate turn {i} from 1 to 5.") for i in range(40)])
    finally:
        judge.close()
    assert [v.score for v in verdicts] == [4] * 40 and backend.requests_sent == 40
    assert all(v.error is None and 4.0 < v.expected_score < 4.5 for v in verdicts)  # from the top logprobs
