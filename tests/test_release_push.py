"""`finevision release push`, offline: --dry-run lists what would be uploaded (no network), a folder
that is not a release is refused, and the upload call gets the repo, folder and ignore patterns."""

from __future__ import annotations

from typer.testing import CliRunner

from etl.cli import app
from etl.release_push import IGNORE_PATTERNS, push

CARD = """---
configs:
- config_name: default
  data_files:
  - split: train
    path: default/train-*
- config_name: geo170k(qa)
  data_files:
  - split: train
    path: geo170k_qa_/train-*
---
# test
"""


def _release(root):
    files = {
        "README.md": CARD,
        "default/train-00000-of-00001.parquet": "x" * 10,
        "geo170k_qa_/train-00000-of-00001.parquet": "y" * 7,
        "_provenance/geo170k_qa_/train-00000-of-00001.parquet": "z" * 3,
        "_staging-1234abcd/geo170k_qa_/leftover.parquet": "w",  # an interrupted export's staging
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_dry_run_lists_the_release_files_and_uploads_nothing(tmp_path, monkeypatch):
    folder = _release(tmp_path / "release")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = CliRunner().invoke(
        app,
        [
            "--lakehouse",
            str(tmp_path / "lake"),
            "release",
            "push",
            "--repo-id",
            "me/fv",
            "--folder",
            str(folder),
            "--dry-run",
        ],
    )
    assert result.exit_code == 0, result.output
    listed = [line.split()[-1] for line in result.output.splitlines()[:-1]]
    assert listed == [
        "README.md",
        "_provenance/geo170k_qa_/train-00000-of-00001.parquet",
        "default/train-00000-of-00001.parquet",
        "geo170k_qa_/train-00000-of-00001.parquet",
    ]
    assert (
        result.output.splitlines()[-1] == "would upload 4 files, " + f"{len(CARD) + 20:,}" + " bytes, to datasets/me/fv"
    )


def test_a_folder_that_is_not_a_release_is_refused(tmp_path):
    folder = _release(tmp_path / "release")
    (folder / "geo170k_qa_" / "train-00000-of-00001.parquet").unlink()
    result = CliRunner().invoke(app, ["release", "push", "--repo-id", "me/fv", "--folder", str(folder), "--dry-run"])
    assert result.exit_code == 2 and "config 'geo170k(qa)': no shards under" in result.output
    result = CliRunner().invoke(app, ["release", "push", "--repo-id", "me/fv", "--folder", str(tmp_path), "--dry-run"])
    assert result.exit_code == 2 and "no README.md" in result.output


def test_push_creates_the_dataset_repo_and_uploads_the_folder_without_staging(tmp_path):
    folder = _release(tmp_path / "release")
    calls = []

    class Api:  # stands in for HfApi in this unit test of push() only
        def create_repo(self, repo_id, **kwargs):
            calls.append(("create_repo", repo_id, kwargs))

        def upload_folder(self, **kwargs):
            calls.append(("upload_folder", kwargs["repo_id"], kwargs))

    files = push(folder, "me/fv", private=True, api=Api())
    assert len(files) == 4
    assert calls[0] == ("create_repo", "me/fv", {"repo_type": "dataset", "private": True, "exist_ok": True})
    upload = calls[1][2]
    assert (upload["folder_path"], upload["repo_type"]) == (str(folder), "dataset")
    assert upload["ignore_patterns"] == IGNORE_PATTERNS and "_staging-*/**" in IGNORE_PATTERNS
