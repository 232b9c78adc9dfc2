"""Hatch build hook: the wheel carries the version and git commit of the tree it was built from
(`etl/build_info.json`), which every run records (`etl.tables.git_revision`); a cluster has no
checkout to ask git. `FINEVISION_GIT_REVISION` names the commit where the build has no `.git`
(a Docker build context). Editable installs skip it: a checkout asks git each run."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile

try:
    from hatchling.builders.hooks.plugin.interface import BuildHookInterface
except ImportError:  # imported outside a build: the tests call tree_revision
    BuildHookInterface = object  # type: ignore[assignment,misc]


def tree_revision(root: str) -> str:
    """The tree's commit (12 hex digits, `-dirty` with uncommitted changes), else "unknown"."""
    if os.environ.get("FINEVISION_GIT_REVISION"):
        return os.environ["FINEVISION_GIT_REVISION"]

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()

    try:
        commit = git("rev-parse", "--short=12", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}-dirty" if commit and dirty else commit or "unknown"


class BuildInfoHook(BuildHookInterface):
    def initialize(self, version: str, build_data: dict) -> None:
        if version == "editable":
            return
        info = {"version": self.metadata.version, "git_revision": tree_revision(self.root)}
        path = os.path.join(tempfile.mkdtemp(prefix="finevision-build-"), "build_info.json")
        with open(path, "w") as out:
            json.dump(info, out)
        build_data["force_include"][path] = "etl/build_info.json"
