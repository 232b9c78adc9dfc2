"""One action space for GUI agent data (FineVision, pipeline stage 6).

Desktop (pyautogui), mobile (AITW, AndroidControl, AGUVIS) and web (Mind2Web) actions are
parsed and rewritten into the unified functions listed in `SIGNATURES`, with coordinates as
fractions of the screenshot's width and height.

Entry points:
- `parse_step(raw, dialect=..., frame=..., bbox=...)`: one step of a source (call text or a JSON
  object) -> the unified `Action`s it stands for, in order.
- `render(action, style)` / `render_step(actions, style)`: unified call text in a `RENDER_STYLES`
  style (`smol2operator`, the default, or `unified`); `parse_unified(text)` reads either back, so
  `parse_unified(render(a)) == [a]`.
- `split_reasoning(text)` / `with_reasoning(...)` (module `reasoning`): smol2operator's
  `<think>`/`<code>` around a step's calls.
- `normalise_chat(messages)`, `SYSTEM_PROMPT`: the chat rules of the reference.

Modules: `actions` (the unified functions, `Action`, `ActionError`, rendering), `coordinates`
(`Frame`: the unit a source's coordinates come in), `calls` (call text -> calls, never evaluated),
one module per dialect (`pyautogui`, `mobile`, `web`, `unified`, each stating its fixed conversion
rules), `steps` (`parse_step`, which picks the dialect), `chat`, and `screenspot` (ScreenSpot-V2's
element boxes as the reference answers of `click_accuracy`).
"""

from etl.sources.gui.actions import (
    BBOX_FORMATS,
    COORD_DECIMALS,
    DIALECTS,
    MAX_CALLS,
    MAX_CHARS,
    REASONS,
    RENDER_STYLES,
    SIGNATURES,
    SYSTEM_PROMPT,
    UNITS,
    Action,
    ActionError,
    render,
    render_step,
)
from etl.sources.gui.calls import parse_calls
from etl.sources.gui.chat import clean_assistant_text, clean_user_text, normalise_chat
from etl.sources.gui.coordinates import FRACTION, Frame
from etl.sources.gui.mobile import MOBILE_CALLS
from etl.sources.gui.pyautogui import PYAUTOGUI_CALLS
from etl.sources.gui.steps import parse_step
from etl.sources.gui.unified import parse_unified
from etl.sources.gui.web import box_centre

__all__ = [
    "BBOX_FORMATS",
    "COORD_DECIMALS",
    "DIALECTS",
    "FRACTION",
    "MAX_CALLS",
    "MAX_CHARS",
    "MOBILE_CALLS",
    "PYAUTOGUI_CALLS",
    "REASONS",
    "RENDER_STYLES",
    "SIGNATURES",
    "SYSTEM_PROMPT",
    "UNITS",
    "Action",
    "ActionError",
    "Frame",
    "box_centre",
    "clean_assistant_text",
    "clean_user_text",
    "normalise_chat",
    "parse_calls",
    "parse_step",
    "parse_unified",
    "render",
    "render_step",
]
