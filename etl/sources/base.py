"""What every source reader yields, and the helpers the readers share.

A reader is a generator `read(ctx: ReadContext, shard: Shard) -> Iterator[RawSample | Rejected]`
over one shard (a file, a row group of a parquet file, or a byte range of a big JSON or JSONL
file); `ctx` holds the source spec, file access and the ingest limits. It runs on an executor, so
it only touches the files of its shard. It never raises for a bad record: it yields `Rejected` with
a reason from `Reason` and enough of the raw record to fix it, and carries on with the next record.
Each format's reader is declared once, with its options, in `etl.sources.formats`.

This module imports `etl.config` for type checking only: `etl.config` validates a spec's options
against the formats, so the import at run time goes one way, config -> sources.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from etl.config import IngestConfig, SourceSpec


class Reason(StrEnum):
    """Why a record went to quarantine. Values are stored in `quarantine.reason`."""

    INVALID_JSON = "invalid_json"
    INVALID_ROW = "invalid_row"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    MISSING_IMAGE = "missing_image"
    UNSAFE_PATH = "unsafe_path"
    IMAGE_TOO_LARGE = "image_too_large"
    RECORD_TOO_LARGE = "record_too_large"
    NO_TURNS = "no_turns"
    UNREADABLE_FILE = "unreadable_file"
    UNSUPPORTED_ACTION = "unsupported_action"
    ADAPTER_ERROR = "adapter_error"  # an unexpected failure on one record; the job goes on
    # cleaning
    CORRUPT_IMAGE = "corrupt_image"
    DECOMPRESSION_BOMB = "decompression_bomb"
    NO_TURNS_LEFT = "no_turns_left"
    # embedding
    UNDECODABLE_IMAGE = "undecodable_image"


@dataclass(frozen=True)
class SourceRef:
    file: str
    member: str | None = None
    row: int | None = None


@dataclass
class RawSample:
    """One converted record: images as (bytes, path) pairs, texts as (user, assistant) pairs."""

    images: Sequence[tuple[bytes, str | None]]
    texts: list[tuple[str, str]]
    ref: SourceRef
    item_id: str | None = None  # benchmark item id, when the source has one


@dataclass
class Rejected:
    reason: Reason
    detail: str
    ref: SourceRef
    raw: str = ""


Record = RawSample | Rejected


class FormatOptions(BaseModel):
    """A format's `options:` (none unless a format's subclass declares fields); an unknown key is
    an error when the spec loads."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Shard:
    """A unit of ingestion work: one file, a row group of a parquet file (`part`), or the byte
    range [start, end) of a big JSON or JSONL file whose first record is row `first_row`."""

    path: str
    part: int | None = None
    start: int = 0
    end: int | None = None  # None: to the end of the file
    first_row: int = 0


class Files(Protocol):
    """File access for adapters (local paths or any pyarrow filesystem URI)."""

    def read_bytes(self, path: str, limit: int) -> bytes: ...
    def open_input(self, path: str): ...


@dataclass
class ReadContext:
    spec: SourceSpec
    files: Files
    ingest: IngestConfig
    image_root: str | None = None
    stats: dict[str, int] = field(default_factory=dict)

    def preview(self, raw: Any) -> str:
        text = raw if isinstance(raw, str) else json.dumps(raw, default=repr, ensure_ascii=False)
        return text[: self.ingest.raw_preview_chars]

    def image_path(self, relative: str) -> str:
        """Resolve a record's image path under image_root, refusing anything that escapes it."""
        if not isinstance(relative, str) or not relative:
            raise UnsafePath(f"image path {relative!r} is not a non-empty string")
        if "\x00" in relative or relative.startswith("/") or "://" in relative:
            raise UnsafePath(f"image path {relative!r} must be relative to image_root")
        normalised = posixpath.normpath(relative.replace("\\", "/"))
        if normalised == ".." or normalised.startswith("../"):
            raise UnsafePath(f"image path {relative!r} escapes image_root")
        if self.image_root is None:
            raise UnsafePath(f"image path {relative!r} given but the source spec has no image_root")
        return f"{self.image_root.rstrip('/')}/{normalised}"

    def read_image(self, relative: str) -> bytes:
        return self.files.read_bytes(self.image_path(relative), self.ingest.max_image_bytes)


Reader = Callable[[ReadContext, Shard], Iterator[Record]]


class UnsafePath(ValueError):
    pass


class TooLarge(ValueError):
    pass


def clean_text(value: Any) -> str:
    """Text as stored: str, NFC-normalised; `None` becomes ''. Non-strings are a type error."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise TypeError(f"expected text, got {type(value).__name__}")
    return unicodedata.normalize("NFC", value)


def strip_image_markers(text: str) -> str:
    return text.replace("<image>", "").strip()


def pair_turns(messages: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """(role, text) messages -> (user, assistant) turns.

    Consecutive messages of one role are merged with a newline; system messages are dropped; a
    trailing user message without an answer is dropped.
    """
    merged: list[list[str]] = []
    for role, text in messages:
        if role == "system":
            continue
        if merged and merged[-1][0] == role:
            merged[-1][1] = f"{merged[-1][1]}\n{text}".strip()
        else:
            merged.append([role, text])
    turns: list[tuple[str, str]] = []
    pending_user: str | None = None
    for role, text in merged:
        if role == "user":
            pending_user = text
        elif role == "assistant" and pending_user is not None:
            turns.append((pending_user, text))
            pending_user = None
    return turns


ROLE_ALIASES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "bot": "assistant",
    "model": "assistant",
    "system": "system",
}


def item_id_of(spec: SourceSpec, record: dict) -> str | None:
    """The benchmark item id of a record, when the spec names an id field and the record has it;
    `<group>/<id>` when the spec names a group field (the category an official aggregate groups
    by, etl/train/aggregates.py) and the record has one."""
    value = record.get(spec.fields["id"]) if "id" in spec.fields else None
    if value is None or value == "":
        return None
    group = record[spec.fields["group"]] if "group" in spec.fields else None
    return str(value) if group is None or group == "" else f"{group}/{value}"


def template_for(templates: list[str], key: str) -> str:
    """A question template chosen deterministically from the record key (stable across runs)."""
    index = int(hashlib.sha256(key.encode()).hexdigest(), 16) % len(templates)
    return templates[index]


def iter_with_rejects(ctx: ReadContext, ref: SourceRef, raw: Any, convert) -> Iterator[Record]:
    """Run `convert()` for one record (`raw` is what quarantine keeps of it), turning the
    expected failures into `Rejected`."""
    try:
        yield from convert()
    except UnsafePath as exc:
        yield Rejected(Reason.UNSAFE_PATH, str(exc), ref, ctx.preview(raw))
    except TooLarge as exc:
        yield Rejected(Reason.IMAGE_TOO_LARGE, str(exc), ref, ctx.preview(raw))
    except FileNotFoundError as exc:
        yield Rejected(Reason.MISSING_IMAGE, f"image not found: {exc}", ref, ctx.preview(raw))
    except KeyError as exc:
        yield Rejected(Reason.MISSING_FIELD, f"missing field {exc}", ref, ctx.preview(raw))
    except (TypeError, AttributeError) as exc:
        yield Rejected(Reason.WRONG_TYPE, str(exc), ref, ctx.preview(raw))
    except json.JSONDecodeError as exc:
        yield Rejected(Reason.INVALID_JSON, str(exc), ref, ctx.preview(raw))
    except Exception as exc:  # noqa: BLE001 - one bad record must never stop the shard
        yield Rejected(Reason.ADAPTER_ERROR, f"{type(exc).__name__}: {exc}", ref, ctx.preview(raw))


def convert_each(ctx: ReadContext, items, convert) -> Iterator[Record]:
    """Pass parse rejections through and run `convert(ref, record)` on each parsed record,
    turning its expected failures into `Rejected` (see `iter_with_rejects`)."""
    for item in items:
        if isinstance(item, Rejected):
            yield item
            continue
        ref, record = item
        yield from iter_with_rejects(ctx, ref, record, lambda ref=ref, record=record: convert(ref, record))
