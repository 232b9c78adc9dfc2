"""The entry point: one step of a source, in its dialect, -> the unified actions it stands for."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from etl.sources.gui.actions import DIALECTS, MAX_CALLS, Action, ActionError, _short
from etl.sources.gui.calls import _bind, _check_length, _Step, parse_calls
from etl.sources.gui.coordinates import FRACTION, Frame
from etl.sources.gui.mobile import MOBILE_CALLS, _mobile_json
from etl.sources.gui.pyautogui import PYAUTOGUI_CALLS
from etl.sources.gui.unified import parse_unified
from etl.sources.gui.web import _web


def _calls_to_actions(text: str, dialect: str, frame: Frame) -> list[Action]:
    step = _Step(frame)
    actions: list[Action] = []
    for call in parse_calls(text):
        prefixes: tuple[str | None, ...]
        if dialect == "pyautogui":
            table, prefixes = PYAUTOGUI_CALLS, (None, "pyautogui", "computer")
        elif call.prefix == "pyautogui":  # AGUVIS mobile mixes pyautogui.click/write in
            table, prefixes = PYAUTOGUI_CALLS, ("pyautogui",)
        else:
            table, prefixes = MOBILE_CALLS, (None, "mobile")
        converter = table.get(call.name)
        if converter is None or call.prefix not in prefixes:
            qualified = f"{call.prefix}.{call.name}" if call.prefix else call.name
            raise ActionError("unsupported_action", f"{_short(qualified)}()")
        bound = _bind(converter, call.name, (step, *call.args), call.kwargs)
        new = converter(*bound.args, **bound.kwargs)
        if new and new[0].name == "drag" and actions and actions[-1].name == "move_mouse":
            actions.pop()  # moveTo + dragTo is one drag
        actions.extend(new)
        if len(actions) > MAX_CALLS:
            raise ActionError("too_many_calls", f"more than {MAX_CALLS} actions in one step")
    return actions


def _json_object(raw: str | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(raw, Mapping):
        return raw
    _check_length(raw)
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError):
        raise ActionError("syntax", "not a JSON object") from None
    if not isinstance(obj, dict):
        raise ActionError("syntax", f"expected a JSON object, got {type(obj).__name__}")
    return obj


def parse_step(
    raw: str | Mapping[str, Any], *, dialect: str, frame: Frame = FRACTION, bbox: str = "xywh"
) -> list[Action]:
    """One step of a source (call text, or a JSON object / its text) -> unified actions.

    `dialect`: `pyautogui` (call text), `mobile` (call text or JSON object), `web` (JSON
    object), `unified` (call text). `frame`: the unit of the source's coordinates. `bbox`: the
    box convention of web elements. Raises `ActionError` only.
    """
    if dialect not in DIALECTS:
        raise ActionError("bad_arguments", f"dialect must be one of {list(DIALECTS)}, got {dialect!r}")
    if not isinstance(raw, (str, Mapping)):
        raise ActionError("syntax", f"a step must be text or an object, got {type(raw).__name__}")
    if dialect == "web":
        actions = _web(_json_object(raw), frame, bbox)
    elif dialect == "mobile" and (isinstance(raw, Mapping) or raw.lstrip().startswith("{")):
        actions = _mobile_json(_json_object(raw), frame)
    elif isinstance(raw, Mapping):
        raise ActionError("syntax", f"the {dialect} dialect expects call text, got an object")
    elif dialect == "unified":
        actions = parse_unified(raw, frame)
    else:
        actions = _calls_to_actions(raw, dialect, frame)
    if not actions:
        raise ActionError("empty", "no action")
    return actions
