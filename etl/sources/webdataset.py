"""WebDataset tar shards: members `<key>.<ext>` grouped by key, read as a stream.

A sample is one image (`jpg`, `jpeg`, `png`, `webp`) plus `<key>.json` (question/answer fields
per `fields`, or a caption) or `<key>.txt` (a caption, with `question_templates`). Members that
are not regular files, or whose names are absolute or contain `..`, are never read.
"""

from __future__ import annotations

import json
import posixpath
import tarfile
from collections.abc import Iterator

from etl.sources.base import (
    RawSample,
    ReadContext,
    Reason,
    Record,
    Rejected,
    Shard,
    SourceRef,
    clean_text,
    item_id_of,
    iter_with_rejects,
    template_for,
)

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")


def _split_member(name: str) -> tuple[str, str]:
    directory, base = posixpath.split(name)
    key, _, ext = base.partition(".")
    return posixpath.join(directory, key), ext.lower()


def _sample(ctx: ReadContext, key: str, members: dict[str, bytes], ref: SourceRef):
    spec = ctx.spec
    images = [(members[ext], f"{key}.{ext}") for ext in IMAGE_EXTENSIONS if ext in members]
    if not images:
        raise KeyError(f"image member for key {key!r}")
    if "json" in members:
        record = json.loads(members["json"])
        if not isinstance(record, dict):
            raise TypeError("json member must hold an object")
        if "caption" in spec.fields:
            turn = (template_for(spec.question_templates, key), clean_text(record[spec.fields["caption"]]))
        else:
            turn = (clean_text(record[spec.field("question")]), clean_text(str(record[spec.field("answer")])))
        item_id = item_id_of(spec, record)
    elif "txt" in members:
        if not spec.question_templates:
            raise KeyError("question_templates (required for .txt captions)")
        turn = (template_for(spec.question_templates, key), clean_text(members["txt"].decode("utf-8", "replace")))
        item_id = None
    else:
        raise KeyError(f"json or txt member for key {key!r}")
    return RawSample(images, [turn], ref, item_id)


def read_webdataset(ctx: ReadContext, shard: Shard) -> Iterator[Record]:
    handle = None
    try:
        handle = ctx.files.open_input(shard.path)
        archive = tarfile.open(fileobj=handle, mode="r|*")
    except (OSError, tarfile.TarError) as exc:
        if handle is not None:
            handle.close()
        yield Rejected(Reason.UNREADABLE_FILE, f"cannot open tar: {exc}", SourceRef(shard.path))
        return
    current_key: str | None = None
    members: dict[str, bytes] = {}
    index = 0

    def flush(key: str):
        ref = SourceRef(shard.path, key, index)
        raw = {"key": key, "members": sorted(members)}
        yield from iter_with_rejects(ctx, ref, raw, lambda: iter([_sample(ctx, key, members, ref)]))

    skip = False  # the current key already went to quarantine
    try:
        with handle, archive:
            for member in archive:
                name = member.name
                if name.startswith("/") or ".." in name.split("/"):
                    yield Rejected(
                        Reason.UNSAFE_PATH,
                        f"tar member {name!r} is absolute or escapes the archive",
                        SourceRef(shard.path, name),
                    )
                    continue
                if not member.isfile():
                    continue
                key, ext = _split_member(name)
                if key != current_key:
                    if current_key is not None and not skip:
                        yield from flush(current_key)
                    index += 1 if current_key is not None else 0
                    current_key, members, skip = key, {}, False
                if skip:
                    continue
                is_image = ext in IMAGE_EXTENSIONS
                limit = ctx.ingest.max_image_bytes if is_image else ctx.ingest.max_record_bytes
                if member.size > limit:
                    skip = True
                    reason = Reason.IMAGE_TOO_LARGE if is_image else Reason.RECORD_TOO_LARGE
                    yield Rejected(
                        reason,
                        f"member {name!r} has {member.size} bytes, limit {limit}",
                        SourceRef(shard.path, key, index),
                    )
                    continue
                content = archive.extractfile(member)  # a file member (checked above) always has content
                members[ext] = content.read() if content is not None else b""
            if current_key is not None and not skip:
                yield from flush(current_key)
    except (OSError, tarfile.TarError, EOFError) as exc:
        yield Rejected(
            Reason.UNREADABLE_FILE,
            f"tar stream broken after key {current_key!r}: {exc}",
            SourceRef(shard.path, current_key),
        )
