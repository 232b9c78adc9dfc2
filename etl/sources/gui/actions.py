"""The unified functions: their vocabulary and limits, the `Action` type and its call text.

Every failure of the package is an `ActionError` (a `ValueError`) whose `reason` is one of
`REASONS`. Input is at most `MAX_CHARS` characters and a step at most `MAX_CALLS` calls/actions.
A coordinate is a fraction in [0, 1] rounded to `COORD_DECIMALS` (4, as smol2operator's AGUVIS data
keeps them) decimals with Python's `round` (0.51249 -> 0.5125, 0.51264 -> 0.5126); `wait` seconds are
rounded the same way. `click`, `double_click` and `right_click` may have no coordinates (at the
mouse's position), as smol2operator writes `double_click()`.

Two call texts (`RENDER_STYLES`), both read back by `parse_unified`:
- `smol2operator` (the default): what smol2operator's function parser prints after its action
  conversion (huggingface/smol2operator, utils/function_parser.py `FunctionCall.to_string` and
  preprocessing/action_conversion.py, commit 1de75ee5): the text argument of `type`, `final_answer`
  and `open_app` positional (`type('hello')`), one key as a string (`press(keys='enter')`), whole
  seconds as an integer (`wait(seconds=3)`), coordinates with up to four decimals. Strings are
  Python literals (`repr`), which is smol2operator's `'...'` except for text holding a quote or a
  backslash, where its unescaped form would not parse.
- `unified`: the earlier form, keyword arguments only and three decimals (`type(text='hello')`,
  `press(keys=['enter'])`, `wait(seconds=3.0)`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

MAX_CHARS = 10_000
MAX_CALLS = 32
MAX_KEYS = 8
MAX_SCROLL_AMOUNT = 100_000
MAX_WAIT_SECONDS = 3600.0
COORD_DECIMALS = 4
UNIFIED_DECIMALS = 3  # the `unified` render style's precision
RenderStyle = Literal["smol2operator", "unified"]
RENDER_STYLES: tuple[str, ...] = get_args(RenderStyle)
# smol2operator's clicks take optional coordinates: `double_click()` clicks where the mouse is.
OPTIONAL_POINT = frozenset({"click", "double_click", "right_click"})
# Functions whose single text argument smol2operator writes positionally.
POSITIONAL_TEXT = frozenset({"type", "final_answer", "open_app"})

Dialect = Literal["pyautogui", "mobile", "web", "unified"]
DIALECTS: tuple[str, ...] = get_args(Dialect)
Units = Literal["pixels", "grid1000", "fraction"]
UNITS: tuple[str, ...] = get_args(Units)
BboxFormat = Literal["xywh", "xyxy"]
BBOX_FORMATS: tuple[str, ...] = get_args(BboxFormat)
DIRECTIONS = ("up", "down", "left", "right")

REASONS = frozenset(
    {
        "too_long",  # input over MAX_CHARS, or a text argument over it
        "too_many_calls",  # a step of more than MAX_CALLS calls or resulting actions
        "empty",  # no action at all
        "syntax",  # not call text / not JSON / not a sequence of calls
        "unsupported_action",  # a function or operation with no unified equivalent
        "bad_arguments",  # missing, unknown or wrongly typed arguments
        "out_of_range",  # a coordinate outside the screen, or a number outside its bounds
        "bad_screen",  # a Frame that cannot convert (pixels without a valid screen size)
    }
)


class ActionError(ValueError):
    """A step that cannot be converted. `reason` is one of `REASONS`; `detail` says why."""

    def __init__(self, reason: str, detail: str):
        assert reason in REASONS, reason
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _finite(value: Any, what: str) -> float:
    if not _is_number(value):
        raise ActionError("bad_arguments", f"{what} must be a number, got {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:
        raise ActionError("out_of_range", f"{what} is too large") from None
    if not math.isfinite(number):
        raise ActionError("bad_arguments", f"{what} must be finite, got {number}")
    return number


def _coord(value: Any, what: str) -> float:
    number = _finite(value, what)
    if not 0.0 <= number <= 1.0:
        raise ActionError("out_of_range", f"{what}={number} is not a fraction in [0, 1]")
    return round(number, COORD_DECIMALS)


def _point(value: Any, what: str) -> tuple[float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ActionError("bad_arguments", f"{what} must be a pair [x, y]")
    return (_coord(value[0], f"{what}[0]"), _coord(value[1], f"{what}[1]"))


def _text(value: Any, what: str, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise ActionError("bad_arguments", f"{what} must be a string, got {type(value).__name__}")
    if not value and not allow_empty:
        raise ActionError("bad_arguments", f"{what} must not be empty")
    if len(value) > MAX_CHARS:
        raise ActionError("too_long", f"{what} has {len(value)} characters, limit {MAX_CHARS}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ActionError("bad_arguments", f"{what} is not valid Unicode text") from None
    return value


def _answer(value: Any, what: str) -> str:
    return _text(value, what, allow_empty=True)


def _keys(value: Any, what: str) -> tuple[str, ...]:
    keys = [value] if isinstance(value, str) else value
    if not isinstance(keys, (list, tuple)) or not 1 <= len(keys) <= MAX_KEYS:
        raise ActionError("bad_arguments", f"{what} must be a key or a list of 1 to {MAX_KEYS} keys")
    return tuple(_text(key, f"{what} item") for key in keys)


def _direction(value: Any, what: str) -> str:
    if not isinstance(value, str) or value not in DIRECTIONS:
        raise ActionError("bad_arguments", f"{what} must be one of {list(DIRECTIONS)}, got {value!r}")
    return value


def _amount(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ActionError("bad_arguments", f"{what} must be an integer, got {type(value).__name__}")
    if not 0 <= value <= MAX_SCROLL_AMOUNT:
        raise ActionError("out_of_range", f"{what} must be in [0, {MAX_SCROLL_AMOUNT}]")
    return value


def _seconds(value: Any, what: str) -> float:
    number = _finite(value, what)
    if not 0.0 <= number <= MAX_WAIT_SECONDS:
        raise ActionError("out_of_range", f"{what}={number} must be in [0, {MAX_WAIT_SECONDS}]")
    return round(number, COORD_DECIMALS)


Validator = Callable[[Any, str], Any]
_XY: tuple[tuple[str, Validator], ...] = (("x", _coord), ("y", _coord))
_FROM_TO: tuple[tuple[str, Validator], ...] = (("from_coord", _point), ("to_coord", _point))

# name -> ((parameter, validator), ...) in signature order.
PARAMETERS: dict[str, tuple[tuple[str, Validator], ...]] = {
    "click": _XY,
    "double_click": _XY,
    "right_click": _XY,
    "move_mouse": _XY,
    "type": (("text", _text),),
    "press": (("keys", _keys),),
    "drag": _FROM_TO,
    "scroll": (("direction", _direction), ("amount", _amount)),
    "wait": (("seconds", _seconds),),
    "navigate_back": (),
    "navigate_home": (),
    "open_app": (("app_name", _text),),
    "swipe": _FROM_TO,
    "long_press": _XY,
    "final_answer": (("answer", _answer),),
}

SIGNATURES: dict[str, str] = {
    "click": "click(x: float, y: float)",
    "double_click": "double_click(x: float, y: float)",
    "right_click": "right_click(x: float, y: float)",
    "move_mouse": "move_mouse(x: float, y: float)",
    "type": "type(text: str)",
    "press": "press(keys: list[str])",
    "drag": "drag(from_coord: [float, float], to_coord: [float, float])",
    "scroll": "scroll(direction: 'up' | 'down' | 'left' | 'right', amount: int)",
    "wait": "wait(seconds: float)",
    "navigate_back": "navigate_back()",
    "navigate_home": "navigate_home()",
    "open_app": "open_app(app_name: str)",
    "swipe": "swipe(from_coord: [float, float], to_coord: [float, float])",
    "long_press": "long_press(x: float, y: float)",
    "final_answer": "final_answer(answer: str)",
}

SYSTEM_PROMPT = (
    "You are a GUI agent. You see a screenshot and an instruction and answer with the next "
    "action as one or more function calls, one per line. Coordinates are fractions of the "
    "screenshot's width (x) and height (y), from 0 (left/top) to 1 (right/bottom).\n"
    "Available functions:\n" + "\n".join(f"- {signature}" for signature in SIGNATURES.values())
)


@dataclass(frozen=True)
class Action:
    """One unified call: a name of `SIGNATURES` and its arguments in signature order.

    Build it with `Action.of(name, **arguments)`, which validates and canonicalises (coordinates
    rounded, pairs and key lists as tuples, seconds as float).
    """

    name: str
    args: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def of(cls, name: str, **arguments: Any) -> Action:
        if name not in PARAMETERS:
            raise ActionError("unsupported_action", f"{name!r} is not a unified function")
        parameters = PARAMETERS[name]
        if name in OPTIONAL_POINT and not arguments:
            return cls(name)
        expected = [p for p, _ in parameters]
        if sorted(arguments) != sorted(expected):
            raise ActionError("bad_arguments", f"{name} takes ({', '.join(expected)}), got ({', '.join(arguments)})")
        return cls(name, tuple((p, check(arguments[p], f"{name}.{p}")) for p, check in parameters))

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.args)


def _unified_value(value: Any) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(_unified_value(v) for v in value) + "]"
    if isinstance(value, float):
        value = round(value, UNIFIED_DECIMALS)
    return repr(value)  # float: shortest round-tripping form; str: a Python literal


def _smol_value(value: Any) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(_smol_value(v) for v in value) + "]"
    return repr(value)


def _smol_argument(action: Action, name: str, value: Any) -> str:
    if action.name in POSITIONAL_TEXT:
        return repr(value)
    if name == "keys" and len(value) == 1:
        return f"keys={value[0]!r}"
    if name == "seconds" and float(value).is_integer():
        return f"seconds={int(value)}"
    return f"{name}={_smol_value(value)}"


def render(action: Action, style: str = "smol2operator") -> str:
    """The call text of one action in a `RENDER_STYLES` style: `click(x=0.5124, y=0.3)`."""
    if style == "smol2operator":
        arguments = ", ".join(_smol_argument(action, name, value) for name, value in action.args)
    elif style == "unified":
        arguments = ", ".join(f"{name}={_unified_value(value)}" for name, value in action.args)
    else:
        raise ValueError(f"render style must be one of {list(RENDER_STYLES)}, got {style!r}")
    return f"{action.name}({arguments})"


def render_step(actions: Sequence[Action], style: str = "smol2operator") -> str:
    """The calls of one step, one per line (the assistant text of a turn)."""
    return "\n".join(render(action, style) for action in actions)


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
