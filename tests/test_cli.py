"""The CLI as a user calls it: dry run, config errors, preview."""

from __future__ import annotations

from typer.testing import CliRunner

from etl.cli import app

runner = CliRunner()


def _base(tmp_path, corpus):
    return ["--lakehouse", str(tmp_path / "lake"), "--set", f"data_root={corpus['data']}",
            "--set", f"sources_dir={corpus['sources']}", "--set", f"mlflow.tracking_uri=sqlite:///{tmp_path}/m.db"]


def test_bad_override_exits_2_with_one_line_naming_the_key(tmp_path):
    result = runner.invoke(app, ["--set", "clean.max_side=huge", "clean"])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1
    assert lines[0].startswith("error:") and "clean.max_side" in lines[0]


def test_unknown_source_is_a_clear_error(tmp_path, dirty_corpus):
    result = runner.invoke(app, [*_base(tmp_path, dirty_corpus), "preview", "--source", "nope"])
    assert result.exit_code == 2 and "unknown source ['nope']" in result.output


def test_dry_run_prints_the_plan_and_writes_nothing(spark, tmp_path, dirty_corpus):
    result = runner.invoke(app, [*_base(tmp_path, dirty_corpus), "--dry-run", "run"])
    assert result.exit_code == 0, result.output
    assert "stage ingest" in result.output and "stage clean" in result.output
    assert "3 shard(s) from 3 source(s)" in result.output
    assert "reads  bronze_samples @ version (not yet written)" in result.output
    assert not (tmp_path / "lake").exists() and not (tmp_path / "m.db").exists()


def test_preview_writes_an_html_page_with_converted_and_rejected_records(tmp_path, dirty_corpus):
    out = tmp_path / "p.html"
    result = runner.invoke(app, [*_base(tmp_path, dirty_corpus), "preview", "--source", "photos", "-n", "5", "--out", str(out)])
    assert result.exit_code == 0, result.output
    page = out.read_text()
    assert page.count('class="card"') == 4 and page.count('class="card rejected"') == 1
    assert "quarantine: missing_image" in page and "Q: Colour?" in page and "data:image/jpeg;base64," in page
