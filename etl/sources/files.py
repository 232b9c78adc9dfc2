"""File access for adapters and shard planning: local paths or any URI pyarrow understands
(s3://, gs://, abfs://, hdfs://). Adapters run on executors and only see this interface."""

from __future__ import annotations

import fnmatch
import posixpath

from pyarrow import fs as pafs

from etl.sources.base import TooLarge


def _split(uri_or_path: str) -> tuple[pafs.FileSystem, str]:
    if "://" in uri_or_path and not uri_or_path.startswith("file://"):
        return pafs.FileSystem.from_uri(uri_or_path)
    return pafs.LocalFileSystem(), uri_or_path.removeprefix("file://")


class ArrowFiles:
    """`Files` over pyarrow filesystems. Paths keep the form they were given in."""

    def read_bytes(self, path: str, limit: int) -> bytes:
        filesystem, local = _split(path)
        info = filesystem.get_file_info(local)
        if info.type == pafs.FileType.NotFound:
            raise FileNotFoundError(path)
        if info.type != pafs.FileType.File:
            raise FileNotFoundError(f"{path} is not a regular file")
        if info.size is not None and info.size > limit:
            raise TooLarge(f"{path} has {info.size} bytes, over the limit of {limit}")
        with filesystem.open_input_stream(local) as stream:
            return stream.read()

    def open_input(self, path: str):
        filesystem, local = _split(path)
        return filesystem.open_input_file(local)


def list_files(location: str, extensions: tuple[str, ...]) -> list[str]:
    """Files a source location names: one file, every matching file under a folder, or a glob."""
    filesystem, local = _split(location)
    prefix = location[: len(location) - len(local)] if location.endswith(local) else ""
    has_glob = any(ch in local for ch in "*?[")
    base = local
    if has_glob:
        base = posixpath.dirname(local.split("*")[0].split("?")[0].split("[")[0]) or "."
    info = filesystem.get_file_info(base)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"source location {location!r} does not exist")
    if info.type == pafs.FileType.File and not has_glob:
        return [location]
    selector = pafs.FileSelector(base, recursive=True)
    found = []
    for entry in filesystem.get_file_info(selector):
        if entry.type != pafs.FileType.File:
            continue
        # `*` must not cross folders: compare depth as well as the pattern
        if has_glob and (entry.path.count("/") != local.count("/") or not fnmatch.fnmatch(entry.path, local)):
            continue
        if not has_glob and not entry.path.lower().endswith(extensions):
            continue
        found.append(prefix + entry.path)
    return sorted(found)
