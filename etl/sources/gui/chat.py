"""Chat normalisation of GUI trajectories (the reference's rules)."""

from __future__ import annotations

import re
from collections.abc import Sequence

_IMAGE_MARKER = "<image>"
_ASSISTANT_PREFIX = re.compile(r"^[ \t]*(?:Action|Observation|Thought):[ \t]*", re.MULTILINE)


def clean_user_text(text: str) -> str:
    """User text without `<image>` markers, stripped."""
    return text.replace(_IMAGE_MARKER, "").strip()


def clean_assistant_text(text: str) -> str:
    """Assistant text without `Action:`/`Observation:`/`Thought:` line prefixes, stripped."""
    return _ASSISTANT_PREFIX.sub("", text).strip()


def normalise_chat(messages: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """(role, text) messages with the texts cleaned by role and consecutive same-role messages
    merged with a newline. Other roles (e.g. system) are kept as they are."""
    merged: list[tuple[str, str]] = []
    for role, text in messages:
        if role == "user":
            text = clean_user_text(text)
        elif role == "assistant":
            text = clean_assistant_text(text)
        if merged and merged[-1][0] == role:
            merged[-1] = (role, f"{merged[-1][1]}\n{text}".strip())
        else:
            merged.append((role, text))
    return merged
