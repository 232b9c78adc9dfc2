"""Review pages on real tables: the decontamination corpus run through ingest, clean, embed,
decontaminate and dedup (once for the module), plus a pair of near-duplicate photos."""

from __future__ import annotations

import html
import json
import re
import shutil
from pathlib import Path

import markupsafe
import pytest
import yaml

from etl import tables
from etl.config import load_config
from etl.jobs import clean, decontaminate, dedup, embed, ingest
from etl.pages import Thumbnail
from etl.review import render_contamination_page, write_contamination_review, write_duplicate_review
from etl.runs import PipelineRun
from etl.schema import BENCHMARK_ITEMS, CONTAMINATION_HITS, NEAR_DUPLICATE_CLUSTERS, SAMPLES
from tests.test_decontaminate import LONG_QUESTION, encode, photo


def config_for(root, sources=None, data=None):
    return load_config(
        overrides=[
            f"lakehouse={root / 'lakehouse'}",
            f"mlflow.tracking_uri=sqlite:///{root / 'mlflow.db'}",
            "mlflow.enabled=false",
            # the page as FineVision's method fills it; the verified method's evidence rows are
            # tests/test_decontam_review.py's
            "decontaminate.method=threshold",
            f"data_root={data or root}",
            f"sources_dir={sources or root / 'sources'}",
        ]
    )


@pytest.fixture(scope="module")
def lakehouse(spark, tmp_path_factory, embedded_contaminated_corpus):
    """The decontamination corpus plus a source holding a photo twice (PNG, and re-encoded as
    JPEG), run through every stage up to dedup. It starts from a copy of the session's corpus
    already through ingest, clean and embed (tests/conftest.py): the stages then add the new
    source's rows and images (ingest merges, clean and embed take only what is new)."""
    root = tmp_path_factory.mktemp("review")
    embedded, embedded_lakehouse = embedded_contaminated_corpus
    corpus = {name: Path(shutil.copytree(embedded[name], root / name)) for name in ("data", "sources")}
    shutil.copytree(embedded_lakehouse, root / "lakehouse")
    slide = photo("immunohistochemistry")
    (corpus["data"] / "img" / "slide.png").write_bytes(encode(slide))
    (corpus["data"] / "img" / "slide_copy.jpg").write_bytes(encode(slide, "JPEG", quality=85))
    (corpus["data"] / "dups.jsonl").write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {"image": "slide.png", "question": "What stain is this?", "answer": "Yes."},
                {"image": "slide_copy.jpg", "question": "What stain is this?", "answer": "A brown one."},
            ]
        )
        + "\n"
    )
    (corpus["sources"] / "dups.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "dups",
                "format": "vqa_jsonl",
                "location": "dups.jsonl",
                "image_root": "img",
                "subset": "dups",
                "category": "General VQA",
            }
        )
    )
    config = config_for(root, corpus["sources"], corpus["data"])
    run = PipelineRun(spark, config, "test")
    for job in (ingest, clean, embed, decontaminate, dedup):
        job.run(run)
    return config


def hit_rows(page: str) -> list[str]:
    """Each hit's row, whole: a verified hit's row holds an evidence table, so a row ends at its
    meta cell's last line (the run), not at the first </tr>."""
    return re.findall(r'<tr class="hit .*?<div class="muted">run [^<]*</div>\s*</td></tr>', page, flags=re.S)


def assert_offline(page: str) -> None:
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page.lower() and "<link" not in page.lower()
    assert all(src.startswith("data:image/") for src in re.findall(r'src="([^"]*)"', page))


def test_contamination_page_shows_each_hit_beside_its_benchmark_item(spark, lakehouse, tmp_path):
    hits = tables.read(spark, tables.TableRef.of(lakehouse, "contamination_hits")).collect()
    image_hit = next(h for h in hits if h["method"].startswith("sscd"))
    text_hit = next(h for h in hits if h["method"] == "text-ngram")

    page = write_contamination_review(spark, lakehouse, tmp_path / "out" / "contamination.html").read_text()
    assert_offline(page)
    rows = hit_rows(page)
    assert len(rows) == len(hits) == 2
    image_row = next(r for r in rows if "image-hit" in r)
    assert "<code>b2</code>" in image_row and f"{image_hit['similarity']:.3f}" in image_row
    assert image_row.count("<img") == 2  # the training copy and the benchmark original
    assert "Describe the cup." in image_row and "What drink?" in image_row
    assert image_hit["sample_id"] in image_row and "threshold 0.950" in image_row

    text_row = next(r for r in rows if "text-hit" in r)
    assert "<code>b3</code>" in text_row and "<img" not in text_row and "overlap: 100%" in text_row
    assert html.escape(LONG_QUESTION) in text_row  # the benchmark question
    assert html.escape(LONG_QUESTION.upper().replace(",", " ;")) in text_row  # the training turn
    assert text_hit["sample_id"] in text_row
    # the header counts by benchmark and method, and names the versions read
    assert re.search(r"<td>toy</td><td><code>sscd-faiss-exact</code></td><td>1</td>", page)
    assert re.search(r"<td>toy</td><td><code>text-ngram</code></td><td>1</td>", page)
    assert re.search(r"<code>contamination_hits</code> v\d+", page) and "<code>silver_samples</code> v" in page

    # limit: only the best hit is joined and shown
    top = write_contamination_review(spark, lakehouse, tmp_path / "top.html", limit=1).read_text()
    assert len(hit_rows(top)) == 1 and "Showing the top 1 of 2 hit(s)" in top


def test_duplicate_page_shows_the_cluster_as_a_grid(spark, lakehouse, tmp_path):
    clusters = tables.read(spark, tables.TableRef.of(lakehouse, "near_duplicate_clusters")).collect()
    assert len(clusters) == 2  # the slide and its JPEG copy, nothing else
    representative = next(c for c in clusters if c["representative"])

    page = write_duplicate_review(spark, lakehouse, tmp_path / "dups.html").read_text()
    assert_offline(page)
    assert "1 cluster(s) holding 2 image(s)" in page
    assert ": 2 images</h2>" in page and "held by 2 sample(s) in subset(s): dups" in page
    assert page.count("<img") == 2 and page.count("&#9733; representative") == 1
    cells = re.findall(r'<div class="cell[^"]*">.*?</code></div>', page, flags=re.S)
    assert len(cells) == 2 and 'class="cell representative"' in cells[0]
    assert representative["image_id"][:16] in cells[0]
    silver = tables.read(spark, tables.TableRef.of(lakehouse, "silver_samples"))
    for sample in silver.filter("subset = 'dups'").collect():
        assert sample["sample_id"] in page

    one = write_duplicate_review(spark, lakehouse, tmp_path / "one.html", max_images=1).read_text()
    assert one.count("<img") == 1 and "2 images (showing 1)" in one and "&#9733; representative" in one


def test_missing_and_empty_tables(spark, tmp_path):
    config = config_for(tmp_path)
    with pytest.raises(ValueError, match=r"contamination_hits .*finevision decontaminate"):
        write_contamination_review(spark, config, tmp_path / "c.html")
    with pytest.raises(ValueError, match=r"near_duplicate_clusters .*finevision dedup"):
        write_duplicate_review(spark, config, tmp_path / "d.html")

    for name, schema in [
        ("contamination_hits", CONTAMINATION_HITS),
        ("near_duplicate_clusters", NEAR_DUPLICATE_CLUSTERS),
        ("benchmark_items", BENCHMARK_ITEMS),
    ]:
        tables.ensure_table(spark, tables.TableRef.of(config, name), schema)
    with pytest.raises(ValueError, match=r"silver_samples .*finevision clean"):
        write_contamination_review(spark, config, tmp_path / "c.html")
    tables.ensure_table(spark, tables.TableRef.of(config, "silver_samples"), SAMPLES)
    assert "No hits" in write_contamination_review(spark, config, tmp_path / "c.html").read_text()
    assert "No near-duplicate clusters" in write_duplicate_review(spark, config, tmp_path / "d.html").read_text()


def test_page_escapes_every_text(tmp_path):
    evil = '<script>alert("x")</script> & <img src=https://example.com/x.png>'
    hit = {
        "image_id": "ab" * 32,
        "sample_id": "s<1>",
        "subset": "sub&set",
        "benchmark": "<b>bench</b>",
        "benchmark_item_id": 'i"1',
        "similarity": 0.97123,
        "model_id": "m<odel>",
        "threshold": 0.95,
        "method": "sscd-faiss-exact",
        "run_id": "r1",
        "train_turns": [{"user": evil, "assistant": "x" * 1000}],
        "train_turn_count": 5,
        "bench_turns": [{"user": evil, "assistant": None}],
        "bench_turn_count": 1,
        "train_thumbs": [Thumbnail("AAAA", None)],
        "bench_thumbs": [Thumbnail(None, f"unreadable image: {evil}")],
        "bench_image_count": 1,
    }
    counts = [{"benchmark": "<b>bench</b>", "method": "sscd-faiss-exact", "hits": 1, "samples": 1}]
    page = render_contamination_page([hit], counts, {"contamination_hits": 3}, config_for(tmp_path), 200)
    escaped = str(markupsafe.escape(evil))
    assert "<script" not in page and "https://" not in page.replace(escaped, "")
    assert escaped in page and "&lt;b&gt;bench&lt;/b&gt;" in page and "s&lt;1&gt;" in page
    assert "0.971" in page and "x" * 400 + "&hellip;" in page and "(+4 more turn(s))" in page
    assert page.count("<img") == 1
