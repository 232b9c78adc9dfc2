"""Hatch build hook: writes `etl/_build.py` (the version and the commit the wheel is built from) into
the wheel, so that runs on a cluster record which code they ran (`etl/build_info.py` reads it).

The commit is `FINEVISION_COMMIT` when set (a build without the repository, e.g. deploy/emr/Dockerfile),
else the checkout's HEAD. A wheel whose commit cannot be known is refused rather than labelled
`unknown`. Editable installs (`uv sync`) get no file: a checkout asks git at run time.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


def _describe_commit(root: Path) -> str | None:
    # etl/build_info.py imports only the standard library; load it without importing the package
    spec = importlib.util.spec_from_file_location("finevision_build_info", root / "etl" / "build_info.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module.describe_commit(root)


class CustomBuildHook(BuildHookInterface):
    def initialize(self, version: str, build_data: dict) -> None:
        if self.target_name != "wheel" or version == "editable":
            return
        root = Path(self.root)
        commit = os.environ.get("FINEVISION_COMMIT") or _describe_commit(root)
        if not commit:
            raise RuntimeError(
                f"{root} is not a git checkout: set FINEVISION_COMMIT to the commit this wheel is built from"
            )
        self._folder = tempfile.mkdtemp(prefix="finevision-build-")
        written = Path(self._folder) / "_build.py"
        written.write_text(
            '"""Written by hatch_build.py when the wheel was built."""\n\n'
            f"VERSION = {self.metadata.version!r}\nCOMMIT = {commit!r}\n"
        )
        build_data["force_include"][str(written)] = "etl/_build.py"

    def finalize(self, version: str, build_data: dict, artifact_path: str) -> None:
        if getattr(self, "_folder", None):
            shutil.rmtree(self._folder, ignore_errors=True)
