"""Model files on storage, opened on an executor: a local path as it is, a URI copied once per machine.

tokenizers, transformers, onnxruntime and torch open local files only. A folder on a POSIX mount
(a Databricks volume under /Volumes, NFS) is used where it is; an object-store URI (s3://, gs://,
abfss://, hdfs://) is copied with pyarrow's filesystems into this machine's temporary folder, once,
and every later task of any Python worker on the machine reuses the copy.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path


def is_uri(path: str) -> bool:
    return "://" in path


def local_path(path: str) -> str:
    """`path` itself when it is local, else a local copy of the file or folder it names."""
    if not is_uri(path):
        return path
    from pyarrow import fs as pafs

    filesystem, remote = pafs.FileSystem.from_uri(path)
    name = remote.rstrip("/").rsplit("/", 1)[-1]
    target = Path(tempfile.gettempdir()) / "finevision-assets" / hashlib.sha256(path.encode()).hexdigest()[:16] / name
    if target.exists():
        return str(target)
    info = filesystem.get_file_info(remote)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"{path} not found")
    staging = target.with_name(f"{name}.tmp{os.getpid()}")
    staging.parent.mkdir(parents=True, exist_ok=True)
    if info.type == pafs.FileType.Directory:
        staging.mkdir()
        pafs.copy_files(
            remote, str(staging), source_filesystem=filesystem, destination_filesystem=pafs.LocalFileSystem()
        )
    else:
        with filesystem.open_input_stream(remote) as source, open(staging, "wb") as out:
            shutil.copyfileobj(source, out)
    try:
        staging.rename(target)  # atomic: a concurrent worker that lost the race keeps the winner's copy
    except OSError:
        shutil.rmtree(staging, ignore_errors=True) if staging.is_dir() else staging.unlink(missing_ok=True)
    return str(target)
