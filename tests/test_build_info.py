"""The wheel carries the version and commit it was built from (hatch_build.py), and runs record
that instead of asking git inside site-packages (which answers "unknown" on every cluster)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tomllib
import zipfile
from pathlib import Path

from etl import tables
from etl.config import PROJECT_ROOT


def test_the_built_wheel_records_its_version_and_commit(tmp_path):
    uv = shutil.which("uv") or str(PROJECT_ROOT / ".tools" / "bin" / "uv")
    if not Path(uv).exists():
        uv = "/work/main/.tools/bin/uv"
    env = {**os.environ, "FINEVISION_GIT_REVISION": "0123456789ab"}  # as a Docker build without .git passes it
    built = subprocess.run(
        [uv, "build", "--wheel", "--out-dir", str(tmp_path)], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = tmp_path.glob("finevision_etl-*.whl")
    info = json.loads(zipfile.ZipFile(wheel).read("etl/build_info.json"))
    version = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert info == {"version": version, "git_revision": "0123456789ab"}


def test_git_revision_is_the_build_records_where_one_is_installed(monkeypatch):
    monkeypatch.setattr(tables, "build_info", lambda: {"version": "0.1.0", "git_revision": "feedbeef0001"})
    assert tables.git_revision() == "feedbeef0001"
    monkeypatch.setattr(tables, "build_info", lambda: None)  # a checkout: git HEAD
    head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert tables.git_revision() == head.stdout.strip()


def test_the_tree_revision_marks_uncommitted_changes(tmp_path, monkeypatch):
    from hatch_build import tree_revision

    monkeypatch.delenv("FINEVISION_GIT_REVISION", raising=False)
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "a.txt").write_text("1")
    git = ["git", "-C", str(tmp_path), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "add", "a.txt"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "one"], check=True)
    commit = subprocess.run([*git, "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert tree_revision(str(tmp_path)) == commit
    (tmp_path / "a.txt").write_text("2")
    assert tree_revision(str(tmp_path)) == f"{commit}-dirty"
    assert tree_revision(str(tmp_path / "no-repo")) == "unknown"
