"""Reasoning around an action: smol2operator's second-stage form `<think>...</think>` then
`<code>...</code>` holding the calls (huggingface/smol2operator, preprocessing/aguvis_processor.py
`convert_to_code_agent_format`, commit 1de75ee5: "<think>\\n" + thought + "\\n</think>\\n" and
"<code>\\n" + calls + "\\n</code>").

`split_reasoning(text)` -> `Reasoned(thought or None, call text, tagged)`; `with_reasoning(r, calls)`
writes the assistant turn back in the same form around (re-rendered) calls. Text without the tags
is all call text.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from etl.sources.gui.actions import MAX_CHARS, ActionError

_THINK = re.compile(r"<think>(.*?)</think>", re.DOTALL)
_CODE = re.compile(r"<code>(.*?)</code>", re.DOTALL)
_TAG = re.compile(r"</?(?:think|code)>")


class Reasoned(NamedTuple):
    thought: str | None  # the `<think>` text, stripped; None without one
    calls: str  # inside `<code>`, else the text after the thought
    tagged: bool  # the source had `<think>` or `<code>`


def split_reasoning(text: str) -> Reasoned:
    """The parts of an assistant text. More than one `<think>` or `<code>` block, text outside the
    blocks next to `<code>`, or a stray tag is a `syntax` error."""
    if len(text) > MAX_CHARS:
        raise ActionError("too_long", f"{len(text)} characters, limit {MAX_CHARS}")
    thinks, codes = _THINK.findall(text), _CODE.findall(text)
    if len(thinks) > 1 or len(codes) > 1:
        raise ActionError("syntax", "more than one <think> or <code> block")
    rest = _CODE.sub("", _THINK.sub("", text))
    if _TAG.search(rest):
        raise ActionError("syntax", "an unclosed <think> or <code> tag")
    thought = thinks[0].strip() if thinks else None
    if codes:
        if rest.strip():
            raise ActionError("syntax", "text outside <think> and <code>")
        return Reasoned(thought, codes[0].strip(), True)
    return Reasoned(thought, rest.strip(), thought is not None)


def with_reasoning(reasoned: Reasoned, calls: str) -> str:
    """The assistant turn in smol2operator's form (`<think>` when there was a thought, then
    `<code>`), or the calls alone when the source had no tags."""
    if not reasoned.tagged:
        return calls
    think = "" if reasoned.thought is None else f"<think>\n{reasoned.thought}\n</think>\n"
    return f"{think}<code>\n{calls}\n</code>"
