"""A folder of files converted once per machine (a tokenizer, a judge checkpoint from a GGUF file).

The folder appears complete or not at all (converted into a staging folder, then renamed), and one
process converts while others that need it at the same moment wait on a lock file beside it: two
jobs on one driver, or two test workers, never read a half-written conversion or undo each other's.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Callable
from pathlib import Path


def converted_once(target: Path, is_complete: Callable[[Path], bool], convert: Callable[[Path], None]) -> Path:
    """`target`, made by `convert(folder)` unless `is_complete(target)` already holds."""
    if is_complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # waits while another process converts
        if not is_complete(target):
            staging = target.with_name(f".{target.name}.tmp{os.getpid()}")
            shutil.rmtree(staging, ignore_errors=True)
            try:
                convert(staging)
            finally:
                if not is_complete(staging):  # failed or interrupted: leave nothing half-written
                    shutil.rmtree(staging, ignore_errors=True)
            if target.exists():  # an earlier conversion that did not finish
                shutil.rmtree(target)
            staging.replace(target)
    return target
