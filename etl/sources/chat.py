"""Chat-shaped sources: LLaVA JSON (`conversations` with `from: human|gpt` and `<image>` markers)
and ShareGPT / OpenAI-messages JSONL (text-only or with images)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator

from etl.sources.base import (
    ROLE_ALIASES,
    RawSample,
    ReadContext,
    Reason,
    Record,
    Rejected,
    Shard,
    TooLarge,
    clean_text,
    convert_each,
    item_id_of,
    pair_turns,
    strip_image_markers,
)
from etl.sources.records import iter_json_records


def _role(value) -> str:
    if not isinstance(value, str) or value.lower() not in ROLE_ALIASES:
        raise TypeError(f"unknown role {value!r}; expected one of {sorted(ROLE_ALIASES)}")
    return ROLE_ALIASES[value.lower()]


def _image_list(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise TypeError(f"image must be a path or a list of paths, got {type(value).__name__}")


def _chat_turns(messages: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(strip_image_markers(u), a.strip()) for u, a in pair_turns(messages)]


def read_llava(ctx: ReadContext, shard: Shard) -> Iterator[Record]:
    return convert_each(ctx, iter_json_records(ctx, shard), lambda ref, record: _llava_sample(ctx, ref, record))


def _llava_sample(ctx: ReadContext, ref, record) -> Iterator[Record]:
    if not isinstance(record, dict):
        raise TypeError(f"expected an object per record, got {type(record).__name__}")
    conversations = record["conversations"]
    if not isinstance(conversations, list):
        raise TypeError("conversations must be a list")
    messages = [(_role(m["from"]), clean_text(m["value"])) for m in conversations]
    turns = _chat_turns(messages)
    paths = _image_list(record.get(ctx.spec.field("image")))
    if not turns:
        yield Rejected(Reason.NO_TURNS, "no user/assistant pair in conversations", ref, ctx.preview(record))
        return
    images = [(ctx.read_image(p), p) for p in paths]
    yield RawSample(images, turns, ref, item_id_of(ctx.spec, record))


def _content_parts(ctx: ReadContext, content) -> tuple[str, list[tuple[bytes, str | None]]]:
    if isinstance(content, str) or content is None:
        return clean_text(content), []
    if not isinstance(content, list):
        raise TypeError(f"content must be text or a list of parts, got {type(content).__name__}")
    texts, images = [], []
    for part in content:
        kind = part["type"]
        if kind == "text":
            texts.append(clean_text(part["text"]))
        elif kind == "image":
            images.append(_image_ref(ctx, part["image"]))
        elif kind == "image_url":
            url = part["image_url"]["url"] if isinstance(part["image_url"], dict) else part["image_url"]
            images.append(_image_ref(ctx, url))
        else:
            raise TypeError(f"unknown content part type {kind!r}")
    return "\n".join(texts), images


def _image_ref(ctx: ReadContext, ref: str) -> tuple[bytes, str | None]:
    if not isinstance(ref, str):
        raise TypeError(f"image reference must be a string, got {type(ref).__name__}")
    if ref.startswith("data:"):
        header, _, payload = ref.partition(",")
        if len(payload) * 3 // 4 > ctx.ingest.max_image_bytes:
            raise TooLarge(f"data URL of about {len(payload) * 3 // 4} bytes over the limit")
        try:
            return base64.b64decode(payload, validate=True), None
        except (binascii.Error, ValueError) as exc:
            raise TypeError(f"data URL is not valid base64: {exc}") from None
    return ctx.read_image(ref), ref


def read_sharegpt(ctx: ReadContext, shard: Shard) -> Iterator[Record]:
    return convert_each(ctx, iter_json_records(ctx, shard), lambda ref, record: _sharegpt_sample(ctx, ref, record))


def _sharegpt_sample(ctx: ReadContext, ref, record) -> Iterator[Record]:
    if not isinstance(record, dict):
        raise TypeError(f"expected an object per line, got {type(record).__name__}")
    images: list[tuple[bytes, str | None]] = [(ctx.read_image(p), p) for p in _image_list(record.get("images"))]
    messages = []
    if "messages" in record:
        if not isinstance(record["messages"], list):
            raise TypeError("messages must be a list")
        for message in record["messages"]:
            text, inline = _content_parts(ctx, message["content"])
            images.extend(inline)
            messages.append((_role(message["role"]), text))
    else:
        if not isinstance(record["conversations"], list):
            raise TypeError("conversations must be a list")
        messages = [(_role(m["from"]), clean_text(m["value"])) for m in record["conversations"]]
    turns = _chat_turns(messages)
    if not turns:
        yield Rejected(Reason.NO_TURNS, "no user/assistant pair in messages", ref, ctx.preview(record))
        return
    yield RawSample(images, turns, ref, item_id_of(ctx.spec, record))
