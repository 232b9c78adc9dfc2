"""The wheel clusters install, installed the way the CPU environments install it (the EMR CPU archive,
the Databricks serverless environment, CPU standalone workers): the wheel and the locked base
dependencies with the `embed-cpu` extra, in a fresh venv, run from a folder outside the checkout.

- The wheel carries the version and the commit it was built from (`etl/_build.py`, written by
  `hatch_build.py`), and the runtime reads them there, with no checkout and no git to ask.
- That environment has no torch, and runs SSCD on ONNX Runtime with the packaged model, as
  decontaminate's `verified` method does for its views on CPU compute.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from etl.build_info import describe_commit
from etl.config import PROJECT_ROOT

UV = shutil.which("uv") or str(PROJECT_ROOT / ".tools" / "bin" / "uv")

pytestmark = pytest.mark.slow  # builds a wheel and a venv (uv's cache: about half a minute)


def _run(args, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{args}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    """(the wheel, a venv with it and the locked base + embed-cpu dependencies)."""
    if not Path(UV).exists():
        pytest.skip("uv is not installed (`make setup` installs it)")
    root = tmp_path_factory.mktemp("wheel")
    _run([UV, "build", "--wheel", "--out-dir", root / "dist", PROJECT_ROOT], cwd=PROJECT_ROOT)
    wheel = next((root / "dist").glob("finevision_etl-*.whl"))
    requirements = root / "requirements.txt"
    _run(
        [UV, "export", "--frozen", "--no-dev", "--extra", "embed-cpu", "--no-emit-project", "--no-hashes", "-q"]
        + ["-o", requirements],
        cwd=PROJECT_ROOT,
    )
    venv = root / "venv"
    _run([UV, "venv", "-q", venv, "--python", sys.executable])
    _run([UV, "pip", "install", "-q", "--python", venv / "bin" / "python", "--no-deps", "-r", requirements, wheel])
    return wheel, venv


def _python(venv: Path, code: str, cwd: Path) -> str:
    """Runs `code` in the venv from `cwd`, with nothing of the checkout or the test's environment on its path."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(cwd)}
    return _run([venv / "bin" / "python", "-I", "-c", code], cwd=cwd, env=env).stdout


def test_the_wheel_records_the_commit_it_was_built_from(built, tmp_path):
    wheel, venv = built
    expected_commit = describe_commit(PROJECT_ROOT)  # HEAD, `-dirty` with uncommitted changes to tracked files
    head = _run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT).stdout.strip()
    assert expected_commit in (head, f"{head}-dirty")
    version = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["version"]
    with zipfile.ZipFile(wheel) as archive:
        assert "etl/_build.py" in archive.namelist()
    outside = tmp_path / "elsewhere"  # no checkout, no .git above it that is ours
    outside.mkdir()
    recorded = json.loads(
        _python(
            venv,
            "import json, etl, etl.build_info as b; info = b.build_info(); "
            "print(json.dumps({'version': info.version, 'commit': info.commit, 'etl': etl.__file__}))",
            outside,
        )
    )
    assert recorded["etl"].startswith(str(venv))  # the installed wheel, not the checkout
    assert recorded == {"version": version, "commit": expected_commit, "etl": recorded["etl"]}


def test_a_build_outside_a_checkout_takes_the_commit_from_the_environment_or_refuses(tmp_path):
    """deploy/emr/Dockerfile builds from a copy without .git: FINEVISION_COMMIT names the commit;
    without it the build fails instead of writing `unknown`."""
    if not Path(UV).exists():
        pytest.skip("uv is not installed (`make setup` installs it)")
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "hatch_build.py"):
        shutil.copy(PROJECT_ROOT / name, source / name)
    for folder in ("etl", "udfs", "conf"):
        shutil.copytree(PROJECT_ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    refused = subprocess.run(
        [UV, "build", "--wheel", "--out-dir", tmp_path / "dist", source], capture_output=True, text=True
    )
    assert refused.returncode != 0 and "FINEVISION_COMMIT" in refused.stdout + refused.stderr
    commit = "0123456789abcdef0123456789abcdef01234567"
    env = {**os.environ, "FINEVISION_COMMIT": commit}
    _run([UV, "build", "--wheel", "--out-dir", tmp_path / "dist", source], env=env)
    (wheel,) = (tmp_path / "dist").glob("finevision_etl-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        written = archive.read("etl/_build.py").decode()
    assert f"COMMIT = {commit!r}" in written


def test_the_cpu_environment_has_no_torch_and_embeds_with_the_packaged_model(built, tmp_path):
    _, venv = built
    image = tmp_path / "photo.png"
    buffer = io.BytesIO()
    Image.new("RGB", (96, 64), (200, 30, 90)).save(buffer, format="PNG")
    image.write_bytes(buffer.getvalue())
    out = _python(
        venv,
        "import importlib.util, json, numpy as np\n"
        "from udfs.sscd import EmbedderSpec, embed_bytes\n"
        "from udfs.verify import pair_features\n"
        f"blob = open({str(image)!r}, 'rb').read()\n"
        "spec = EmbedderSpec(device='cpu')\n"
        "vectors = embed_bytes(spec, [blob])\n"
        "features = pair_features(spec, [blob], [blob])\n"
        "print(json.dumps({'torch': importlib.util.find_spec('torch') is not None, 'shape': list(vectors.shape),\n"
        "    'norm': float(np.linalg.norm(vectors[0])), 'views': float(features['sscd_views'][0])}))",
        tmp_path,
    )
    result = json.loads(out.strip().splitlines()[-1])
    assert result["torch"] is False
    assert result["shape"] == [1, 512] and abs(result["norm"] - 1) < 1e-3
    assert result["views"] > 0.99  # an image against itself: the views' best cosine is ~1
