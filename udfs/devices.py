"""Which device a model runs on: the Spark task's GPU, any GPU, or the CPU."""

from __future__ import annotations


def parse_device(device: str) -> tuple[str, int | None]:
    """`device` as (kind, GPU index or None); a ValueError unless auto, cpu, cuda or cuda:N."""
    if device in ("auto", "cpu", "cuda"):
        return device, None
    if device.startswith("cuda:") and device[5:].isdigit():
        return "cuda", int(device[5:])
    raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', not {device!r}")


def task_gpu_address() -> int | None:
    """The GPU the Spark scheduler gave the current task, or None outside a task / without GPUs."""
    try:
        from pyspark import TaskContext
    except ImportError:
        return None
    context = TaskContext.get()
    if context is None:
        return None
    info = context.resources().get("gpu")
    if info is None or not info.addresses:
        return None
    address = str(info.addresses[0]).strip()
    return int(address) if address.isdigit() else None


def pick_device(requested: str = "auto", cuda_available: bool | None = None, device_count: int | None = None) -> str:
    """Resolve `requested` to `cpu` or `cuda:N`.

    With `auto` or `cuda`, N is the GPU address in the Spark task's resources when running in a
    task (`TaskContext.get().resources()["gpu"]`), else 0. When the cluster manager isolates GPUs
    (so the process sees fewer devices than the address suggests) and `device_count` is given,
    an out-of-range address falls back to 0. `cuda_available` says whether the backend can use
    CUDA; `None` asks torch if it is installed.
    """
    kind, index = parse_device(requested)
    if kind == "cpu":
        return "cpu"
    if cuda_available is None:
        cuda_available, device_count = _torch_cuda()
    if not cuda_available:
        if kind == "cuda":
            raise RuntimeError(f"device {requested!r} requested but CUDA is not available to this backend")
        return "cpu"
    if index is None:
        index = task_gpu_address() or 0
    if device_count is not None and index >= device_count:
        index = 0
    return f"cuda:{index}"


def _torch_cuda() -> tuple[bool, int | None]:
    try:
        import torch
    except ImportError:
        return False, None
    available = torch.cuda.is_available()
    return available, (torch.cuda.device_count() if available else None)
