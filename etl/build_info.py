"""Which code a run ran: the package version and the commit it was built from.

`make wheel` (`uv build --wheel`) writes both into the wheel as `etl/_build.py` (`hatch_build.py`,
the build hook), so a cluster that installs the wheel records the commit without a checkout or git.
In a checkout (an editable install, where nothing is written) the commit comes from git and the
version from the installed metadata. A commit with uncommitted changes to tracked files reads
`<sha>-dirty`, as `git describe --dirty` marks it.

This module imports nothing outside the standard library: the build hook loads `describe_commit`
from this file without importing the `etl` package.
"""

from __future__ import annotations

import importlib
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path

UNKNOWN = "unknown"
CHECKOUT = Path(__file__).resolve().parent.parent  # the project root, when this file lies in a checkout


@dataclass(frozen=True)
class Build:
    version: str  # the package version, e.g. 0.1.0
    commit: str  # the full commit hash, `<sha>-dirty` with uncommitted changes, or `unknown`


def describe_commit(root: Path) -> str | None:
    """HEAD of the git checkout at `root` (`<sha>-dirty` when tracked files differ from it);
    None where `root` is not a checkout or git is missing."""
    if not (root / ".git").exists():  # a folder in a worktree: .git is a file
        return None
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    sha = head.stdout.strip()
    if head.returncode != 0 or not sha:
        return None
    return f"{sha}-dirty" if status.returncode == 0 and status.stdout.strip() else sha


@cache
def build_info() -> Build:
    """The version and commit of the running code: from the wheel's `etl/_build.py`, else from the
    checkout (git) and the installed metadata, else `unknown`."""
    try:
        written = importlib.import_module("etl._build")
        return Build(written.VERSION, written.COMMIT)
    except ImportError:
        pass
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version("finevision-etl")
    except PackageNotFoundError:
        installed = UNKNOWN
    return Build(installed, describe_commit(CHECKOUT) or UNKNOWN)
