"""subset_stats, SQL views, the HTML report (seen in headless Chromium) and the notebooks.

A tiny hand-made lakehouse checks every figure against values worked out by hand (and token
counts against the tokenizer itself); the sample corpus lakehouse (one pipeline run per test run,
tests/conftest.py) checks the report, the views and the notebooks end to end."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from etl import tables
from etl.jobs import analyze
from etl.jobs.decontaminate import current_rules
from etl.report import write_report
from etl.runs import PipelineRun
from etl.schema import CONTAMINATION_HITS, NEAR_DUPLICATE_CLUSTERS, SAMPLES
from etl.specs import rules_from
from etl.views import register_views
from tests.conftest import png_bytes

RATINGS_SCHEMA = (
    "sample_id string, turn_index int, axis string, score int, expected_score int, judge_model string, "
    "prompt_hash string, error string, run_id string"
)


def _image(name: str, size: tuple[int, int]) -> dict:
    return {"bytes": png_bytes(size), "path": name, "image_id": name, "width": size[0], "height": size[1]}


def _sample(sample_id, subset, category, images, turns):
    return {
        "sample_id": sample_id,
        "subset": subset,
        "category": category,
        "source": subset,
        "images": images,
        "texts": [{"user": u, "assistant": a} for u, a in turns],
        "source_ref": None,
    }


@pytest.fixture
def tiny_lakehouse(spark, make_config):
    """Three subsets; s1 and s2 share img1 (exact duplicate), img2 is contaminated and in a
    near-duplicate cluster with img3; s4 is text-only; turn_ratings rates s1 and s3."""
    config = make_config(mlflow__enabled="false")
    img1, img2, img3 = _image("img1", (100, 50)), _image("img2", (300, 200)), _image("img3", (40, 40))
    silver = [
        _sample(
            "s1",
            "alpha",
            "General VQA",
            [img1],
            [("What colour is it?", "Red."), ("And the shape?", "A square with round corners.")],
        ),
        _sample("s2", "alpha", "General VQA", [img1], [("Colour?", "Red, clearly.")]),
        _sample("s3", "beta", "Chart & Table", [img2, img3], [("Which bar is highest?", "The second one.")]),
        _sample("s4", "gamma", "Text-only", [], [("2+2?", "4")]),
    ]
    commit = tables.Commit("test", "test", "0", "0")
    ref = lambda name: tables.TableRef.of(config, name)  # noqa: E731
    tables.overwrite(spark, ref("silver_samples"), spark.createDataFrame(silver, SAMPLES), commit, SAMPLES)
    rule = current_rules(config)["image"]  # a hit of the configuration in force (others count nowhere)
    hit = [("img2", "s3", "beta", "bench", "item9", 0.99, "m", 0.95, "sscd-faiss-exact", "r", None, "threshold", rule)]
    hit += [("img1", "s1", "alpha", "bench", "item8", 0.9, "m", 0.95, "sscd-verified", "r0", None, "verified", "old")]
    tables.overwrite(
        spark, ref("contamination_hits"), spark.createDataFrame(hit, CONTAMINATION_HITS), commit, CONTAMINATION_HITS
    )
    cluster = [("img2", "img2", 2, True), ("img3", "img2", 2, False)]
    tables.overwrite(
        spark,
        ref("near_duplicate_clusters"),
        spark.createDataFrame(cluster, NEAR_DUPLICATE_CLUSTERS),
        commit,
        NEAR_DUPLICATE_CLUSTERS,
    )
    from etl.specs import configured_judges

    judge = configured_judges(config)  # axis -> the configured (judge_model, prompt_hash)
    ratings = [
        ("s1", 0, "formatting", 4, None, *judge["formatting"], None, "r"),
        ("s1", 1, "formatting", 2, None, *judge["formatting"], None, "r"),
        ("s1", 0, "relevance", 5, None, *judge["relevance"], None, "r"),
        ("s3", 0, "formatting", None, None, *judge["formatting"], "timeout", "r"),  # a judge error: no score
        ("s4", 0, "formatting", 5, None, *judge["formatting"], None, "r"),
    ]
    spark.createDataFrame(ratings, RATINGS_SCHEMA).write.format("delta").save(ref("turn_ratings").path)
    return config, silver


def test_subset_stats_count_only_the_configured_judge_and_prompt(spark, tiny_lakehouse):
    from etl.specs import configured_judges

    config, _ = tiny_lakehouse
    judge = configured_judges(config)
    other_scores = [  # another judge, and the configured judge with another prompt: neither counts
        ("s1", 0, "formatting", 1, None, "another-judge", judge["formatting"][1], None, "r"),
        ("s1", 1, "relevance", 1, None, judge["relevance"][0], "another-prompt", None, "r"),
        ("s3", 0, "visual_dependency", 1, None, "another-judge", judge["visual_dependency"][1], None, "r"),
    ]
    ref = tables.TableRef.of(config, "turn_ratings")
    spark.createDataFrame(other_scores, RATINGS_SCHEMA).write.format("delta").mode("append").save(ref.path)
    run = PipelineRun(spark, config, "test")
    analyze.run(run)
    stats = {r["name"]: r for r in tables.read(spark, run.table("subset_stats")).collect()}
    assert stats["alpha"]["rating_formatting"] == 3.0 and stats["alpha"]["rating_relevance"] == 5.0
    assert stats["beta"]["rating_visual_dependency"] is None and stats["*"]["rating_visual_dependency"] is None


def test_subset_stats_per_subset_category_and_total(spark, tiny_lakehouse):
    config, silver = tiny_lakehouse
    run = PipelineRun(spark, config, "test")
    analyze.run(run)
    stats = {r["name"]: r for r in tables.read(spark, run.table("subset_stats")).collect()}
    assert {n: stats[n]["level"] for n in stats} == {
        "alpha": "subset",
        "beta": "subset",
        "gamma": "subset",
        "General VQA": "category",
        "Chart & Table": "category",
        "Text-only": "category",
        "*": "total",
    }
    alpha, beta, gamma, total = stats["alpha"], stats["beta"], stats["gamma"], stats["*"]
    assert (alpha["samples"], alpha["images"], alpha["turns"]) == (2, 2, 3)
    assert (beta["samples"], beta["images"], beta["turns"]) == (1, 2, 1)
    assert (total["samples"], total["images"], total["turns"]) == (4, 4, 5)
    assert alpha["sample_share"] == 0.5 and alpha["images_per_sample"] == 1.0 and gamma["images_per_sample"] == 0.0
    assert (
        alpha["exact_duplicate_share"] == 1.0
        and beta["exact_duplicate_share"] == 0.0
        and total["exact_duplicate_share"] == 0.5
    )
    assert beta["near_duplicate_share"] == 1.0 and alpha["near_duplicate_share"] == 0.0
    assert beta["contaminated_sample_rate"] == 1.0 and beta["contaminated_image_rate"] == 0.5
    assert alpha["contaminated_sample_rate"] == 0.0  # an earlier configuration's hit counts for nothing
    assert total["contaminated_sample_rate"] == 0.25 and total["contaminated_image_rate"] == pytest.approx(1 / 3)
    assert (beta["side_p10"], beta["side_p90"]) == (40, 300) and gamma["side_p50"] is None
    assert alpha["rating_formatting"] == 3.0 and alpha["rating_relevance"] == 5.0
    assert beta["rating_formatting"] is None  # only a judge error: no score
    assert total["rating_formatting"] == pytest.approx(11 / 3) and total["rating_visual_dependency"] is None
    assert stats["General VQA"]["samples"] == 2 and stats["General VQA"]["category"] == "General VQA"

    from tokenizers import Tokenizer  # token counts straight from the SmolLM2 tokenizer

    tokenizer = Tokenizer.from_file(rules_from(config).tokenizer_json)
    count = lambda text: len(tokenizer.encode(text, add_special_tokens=False).ids)  # noqa: E731
    alpha_turns = [t for s in silver if s["subset"] == "alpha" for t in s["texts"]]
    assert alpha["question_tokens"] == sum(count(t["user"]) for t in alpha_turns) > 0
    assert alpha["answer_tokens"] == sum(count(t["assistant"]) for t in alpha_turns) > 0
    assert total["answer_tokens"] == sum(count(t["assistant"]) for s in silver for t in s["texts"])

    registered, skipped = register_views(spark, config)
    assert "v_rating_distribution" in registered and "v_diversity" in skipped  # no embeddings: no diversity
    formatting = {
        r["score"]: r for r in spark.sql("SELECT * FROM v_rating_distribution WHERE axis = 'formatting'").collect()
    }
    assert {s: r["turns"] for s, r in formatting.items()} == {2: 1, 4: 1, 5: 1}
    assert formatting[4]["share"] == pytest.approx(1 / 3) and formatting[4]["finevision_share"] == pytest.approx(0.775)
    history = spark.sql(f"DESCRIBE HISTORY {run.table('subset_stats').sql}").first()
    assert run.run_id in history["userMetadata"]
    logged = tables.read(spark, run.table("pipeline_runs")).filter(F.col("stage") == "analyze").first()
    assert logged["input_versions"]["turn_ratings"] == 0 and "diversity_metrics" not in logged["output_versions"]


def test_report_shows_ratings_when_turn_ratings_exists(spark, tiny_lakehouse, tmp_path):
    config, _ = tiny_lakehouse
    analyze.run(PipelineRun(spark, config, "test"))
    page = write_report(spark, config, tmp_path / "report").read_text()
    assert "No ratings yet" not in page and "rated turns" in page
    assert "3 rated turns" in page  # formatting: the judge error is not a rated turn
    assert (tmp_path / "report" / "review_duplicates.html").exists()
    assert not (tmp_path / "report" / "review_contamination.html").exists()  # no benchmark_items to show
    assert "Not available: contamination_hits" in page and 'src="review_duplicates.html"' in page


# ---- the sample corpus lakehouse -------------------------------------------------------------


def _config_of(sample_lakehouse):
    run, _, _ = sample_lakehouse
    return run.config


def test_views_agree_with_the_tables(spark, sample_lakehouse):
    config = _config_of(sample_lakehouse)
    registered, skipped = register_views(spark, config)
    assert {"v_subset_stats", "v_contamination_by_benchmark", "v_diversity", "v_duplicate_clusters"} <= set(registered)
    assert not skipped, skipped  # the pipeline's rate stage wrote turn_ratings
    silver = tables.read(spark, tables.TableRef.of(config, "silver_samples"))
    assert spark.sql("SELECT sum(samples) FROM v_subset_stats").first()[0] == silver.count()
    hits = tables.read(spark, tables.TableRef.of(config, "contamination_hits")).count()
    assert spark.sql("SELECT sum(hits) FROM v_contamination_by_benchmark").first()[0] == hits > 0
    clusters = tables.read(spark, tables.TableRef.of(config, "near_duplicate_clusters"))
    assert (
        spark.sql("SELECT count(*) FROM v_duplicate_clusters").first()[0]
        == clusters.select("cluster_id").distinct().count()
    )
    ratings = tables.read(spark, tables.TableRef.of(config, "turn_ratings")).filter(F.col("score").isNotNull())
    assert spark.sql("SELECT coalesce(sum(turns), 0) FROM v_rating_distribution").first()[0] == ratings.count()
    total = spark.sql("SELECT * FROM v_diversity WHERE level = 'total'").first()
    assert 1 < total["effective_rank"] < 512 and 0 < total["diversity_score"] < 1


def test_report_as_a_person_sees_it(spark, sample_lakehouse, chromium, tmp_path):
    config = _config_of(sample_lakehouse)
    index = write_report(spark, config, tmp_path / "report")
    silver = tables.read(spark, tables.TableRef.of(config, "silver_samples"))
    samples, subsets = silver.count(), [r[0] for r in silver.select("subset").distinct().collect()]

    page = chromium.new_page(viewport={"width": 1300, "height": 900})
    page.goto(index.as_uri())
    page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    assert (tmp_path / "report.png").stat().st_size > 10_000

    headline = page.locator("#headline + .cards").inner_text()
    assert f"{samples:,}" in headline
    table_text = page.locator("#subset-table").inner_text()
    assert all(subset in table_text for subset in subsets)
    assert page.locator("#ratings").is_visible() and page.locator("#no-ratings").count() == 0  # rate ran
    assert page.locator("svg rect.bar").count() >= len(subsets)  # category and diversity bars drawn

    frames = [f for f in page.frames if f != page.main_frame]
    assert {Path(f.url).name for f in frames} == {"review_contamination.html", "review_duplicates.html"}
    for frame in frames:
        loaded = frame.evaluate("Array.from(document.images).map(i => i.complete && i.naturalWidth > 0)")
        assert loaded and all(loaded), frame.url
    page.locator("#contamination").scroll_into_view_if_needed()
    page.screenshot(path=str(tmp_path / "contamination.png"))

    links = page.evaluate(
        "Array.from(document.querySelectorAll('a[href], iframe[src]')).map(e => e.getAttribute('href') || e.getAttribute('src'))"
    )
    assert links
    for link in links:
        assert not link.startswith(("http:", "https:", "//")), f"the report must work offline: {link}"
        if link.startswith("#"):
            assert page.locator(link).count() == 1, link
        else:
            assert (index.parent / link).exists(), link
    page.close()


def test_notebooks_run_against_the_lakehouse(sample_lakehouse):
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    from etl.notebooks import databricks_to_notebook

    run, _, root = sample_lakehouse
    env = dict(
        os.environ, FINEVISION_LAKEHOUSE=run.config.lakehouse, FINEVISION_MLFLOW_URI=run.config.mlflow.tracking_uri
    )
    project = Path(__file__).resolve().parents[1]
    notebooks = sorted((project / "notebooks").glob("*.py"))
    assert len(notebooks) == 4
    kernel = KernelManager(kernel_name="python3")
    kernel.start_kernel(cwd=str(project), env=env)  # one kernel (one Spark driver) for all notebooks
    outputs = {}
    try:
        for path in notebooks:
            notebook = databricks_to_notebook(path.read_text(encoding="utf-8"))
            NotebookClient(notebook, km=kernel, timeout=600).execute()  # raises on any failing cell
            outputs[path.stem] = "".join(
                str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", ""))
                for cell in notebook.cells
                if cell.cell_type == "code"
                for o in cell.outputs
            )
    finally:
        kernel.shutdown_kernel(now=True)
    assert "mixture of" in outputs["build_training_mixture"]
    assert "chartqa_local" in outputs["review_contamination"]
    assert run.mlflow_run_id in outputs["compare_mlflow_runs"]
