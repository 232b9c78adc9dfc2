"""One action space for GUI agent data (FineVision, pipeline stage 6).

Desktop (pyautogui), mobile (AITW, AndroidControl, AGUVIS) and web (Mind2Web) actions are
parsed and rewritten into the unified functions listed in `SIGNATURES`, with coordinates as
fractions of the screenshot's width and height.

Entry points:
- `parse_step(raw, dialect=..., frame=..., bbox=...)`: one step of a source (call text or a JSON
  object) -> the unified `Action`s it stands for, in order.
- `render(action)` / `render_step(actions)`: unified call text; `parse_unified(text)` reads it back,
  so `parse_unified(render(a)) == [a]`.
- `normalise_chat(messages)`, `SYSTEM_PROMPT`: the chat rules of the reference.

Coordinates. The caller states the source's unit once, in a `Frame`: `pixels` (divided by the
screen's width and height), `grid1000` (divided by 1000) or `fraction` (taken as is). A value is
never guessed per call. After conversion every coordinate must lie in [0, 1], else the step is an
`out_of_range` error; it is then rounded to `COORD_DECIMALS` (3) decimals with Python's `round`
(0.51249 -> 0.512, 0.5126 -> 0.513). `wait` seconds are rounded the same way.

Web element boxes become their centre. Two box conventions, chosen per source (`bbox`):
`xywh` = [left, top, width, height] (Mind2Web's `bounding_box_rect`, the default) and
`xyxy` = [left, top, right, bottom]; both in the frame's unit, as a list or a "a,b,c,d" string.

Safety. Call text is read with `ast.parse` and only literal arguments (numbers, strings, lists of
them) are accepted by inspecting the nodes: nothing is evaluated. Input is at most `MAX_CHARS`
characters and a step at most `MAX_CALLS` calls/actions.

Errors. Every failure is an `ActionError` (a `ValueError`) whose `reason` is one of `REASONS`.

Fixed conversion rules (beyond the reference's mapping table):
- pyautogui `click(button="right")` -> right_click, `click(clicks=2)` -> double_click; `press` of
  a list presses the keys one after another (one `press` each), `hotkey` presses them together;
  `dragTo` starts where the previous call of the same step left the mouse (a `moveTo` right
  before it is folded into the drag) and is an error without one; `scroll(clicks)` is pyautogui's
  own sign (positive = up), `scroll(page=p)` follows the reference (p < 0 = up, amount
  int(|p|*100)); `scroll(.., x, y)` first moves the mouse there.
- mobile `swipe(direction=d)` is a finger movement across the screen centre, `DIRECTION_SWIPES`;
  `scroll(direction=d)` (AndroidControl, android_world) moves the *content* d, i.e. the finger
  the opposite way. AITW `DUAL_POINT` is a tap when its points are at most 0.04 apart (AITW's
  own threshold, in fractions), else a swipe. `wait` without a duration is `DEFAULT_WAIT_SECONDS`.
  AITW `STATUS_TASK_COMPLETE`/`_IMPOSSIBLE` -> final_answer("success"/"infeasible").
- web `CLICK` -> click(centre); `TYPE` and `SELECT` -> click(centre) then type(value) (a select
  box is focused and the option typed); `HOVER` -> move_mouse(centre).
"""

from __future__ import annotations

import ast
import inspect
import json
import math
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

MAX_CHARS = 10_000
MAX_CALLS = 32
MAX_KEYS = 8
MAX_SCROLL_AMOUNT = 100_000
MAX_WAIT_SECONDS = 3600.0
COORD_DECIMALS = 3
DEFAULT_WAIT_SECONDS = 1.0
AITW_TAP_DISTANCE = 0.04

DIALECTS = ("pyautogui", "mobile", "web", "unified")
UNITS = ("pixels", "grid1000", "fraction")
BBOX_FORMATS = ("xywh", "xyxy")
DIRECTIONS = ("up", "down", "left", "right")
OPPOSITE = {"up": "down", "down": "up", "left": "right", "right": "left"}
# Finger movement for a direction-only swipe: across the screen centre, 60% of the screen.
DIRECTION_SWIPES = {
    "up": ((0.5, 0.8), (0.5, 0.2)),
    "down": ((0.5, 0.2), (0.5, 0.8)),
    "left": ((0.8, 0.5), (0.2, 0.5)),
    "right": ((0.2, 0.5), (0.8, 0.5)),
}

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


# ---------------------------------------------------------------------------------------------
# The unified functions


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
        expected = [p for p, _ in parameters]
        if sorted(arguments) != sorted(expected):
            raise ActionError("bad_arguments", f"{name} takes ({', '.join(expected)}), got ({', '.join(arguments)})")
        return cls(name, tuple((p, check(arguments[p], f"{name}.{p}")) for p, check in parameters))

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.args)


# ---------------------------------------------------------------------------------------------
# Rendering


def _render_value(value: Any) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(_render_value(v) for v in value) + "]"
    return repr(value)  # float: shortest round-tripping form; str: a Python literal


def render(action: Action) -> str:
    """The unified call text, keyword arguments only: `click(x=0.512, y=0.3)`."""
    arguments = ", ".join(f"{name}={_render_value(value)}" for name, value in action.args)
    return f"{action.name}({arguments})"


def render_step(actions: Sequence[Action]) -> str:
    """The calls of one step, one per line (the assistant text of a turn)."""
    return "\n".join(render(action) for action in actions)


# ---------------------------------------------------------------------------------------------
# Coordinates


@dataclass(frozen=True)
class Frame:
    """The unit a source gives coordinates in, and the screen size when that unit is pixels."""

    units: str = "fraction"
    width: int | None = None
    height: int | None = None

    def __post_init__(self) -> None:
        if self.units not in UNITS:
            raise ActionError("bad_screen", f"units must be one of {list(UNITS)}, got {self.units!r}")
        if self.units == "pixels":
            for size in (self.width, self.height):
                if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
                    raise ActionError(
                        "bad_screen", f"pixel coordinates need a positive screen size, got {self.width}x{self.height}"
                    )

    def fraction(self, value: Any, axis: str, what: str) -> float:
        """One coordinate as a fraction of the screen along `axis` ('x' or 'y')."""
        number = _finite(value, what)
        if self.units == "pixels":
            size = self.width if axis == "x" else self.height
            assert size is not None  # checked positive in __post_init__ for pixel units
            number /= size
        elif self.units == "grid1000":
            number /= 1000.0
        if not 0.0 <= number <= 1.0:
            raise ActionError("out_of_range", f"{what}={value!r} ({self.units}) is outside the screen")
        return round(number, COORD_DECIMALS)

    def point(self, x: Any, y: Any, what: str) -> tuple[float, float]:
        return (self.fraction(x, "x", f"{what}.x"), self.fraction(y, "y", f"{what}.y"))

    def pair(self, value: Any, what: str) -> tuple[float, float]:
        """An `[x, y]` pair in the frame's unit."""
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise ActionError("bad_arguments", f"{what} must be a pair [x, y]")
        return self.point(value[0], value[1], what)


FRACTION = Frame("fraction")


# ---------------------------------------------------------------------------------------------
# Call text -> calls (ast inspection only)


@dataclass(frozen=True)
class Call:
    prefix: str | None  # `pyautogui` in `pyautogui.click(...)`, None for a bare name
    name: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(hash=False)


def _check_length(text: str) -> None:
    if len(text) > MAX_CHARS:
        raise ActionError("too_long", f"{len(text)} characters, limit {MAX_CHARS}")


def _literal(node: ast.AST, depth: int = 0) -> Any:
    """The value of a literal argument node: numbers, strings, None, booleans, lists of them."""
    if isinstance(node, ast.Constant) and (node.value is None or type(node.value) in (str, int, float, bool)):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        operand = node.operand
        if (
            isinstance(operand, ast.Constant)
            and isinstance(operand.value, (int, float))
            and type(operand.value) is not bool
        ):
            return -operand.value if isinstance(node.op, ast.USub) else operand.value
    if isinstance(node, (ast.List, ast.Tuple)) and depth < 2:
        return [_literal(element, depth + 1) for element in node.elts]
    raise ActionError("bad_arguments", f"arguments must be literals, got a {type(node).__name__} expression")


def _call(node: ast.Call) -> Call:
    func = node.func
    if isinstance(func, ast.Name):
        prefix, name = None, func.id
    elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
        prefix, name = func.value.id, func.attr
    else:
        raise ActionError("syntax", "a call must be `name(...)` or `module.name(...)`")
    args = []
    for arg in node.args:
        if isinstance(arg, ast.Starred):
            raise ActionError("bad_arguments", f"{name}: *arguments are not accepted")
        args.append(_literal(arg))
    kwargs = {}
    for keyword in node.keywords:
        if keyword.arg is None:
            raise ActionError("bad_arguments", f"{name}: **arguments are not accepted")
        kwargs[keyword.arg] = _literal(keyword.value)
    return Call(prefix, name, tuple(args), kwargs)


def parse_calls(text: str) -> list[Call]:
    """Call text (calls separated by newlines or `;`) -> its calls, with literal arguments."""
    if not isinstance(text, str):
        raise ActionError("syntax", f"expected call text, got {type(text).__name__}")
    _check_length(text)
    source = text.strip()
    if not source:
        raise ActionError("empty", "no action")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. SyntaxWarning for "\d" inside a string
            tree = ast.parse(source, mode="exec")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise ActionError("syntax", f"not call text: {type(exc).__name__}") from None
    if not tree.body:
        raise ActionError("empty", "no action")
    if len(tree.body) > MAX_CALLS:
        raise ActionError("too_many_calls", f"{len(tree.body)} statements, limit {MAX_CALLS}")
    calls = []
    for statement in tree.body:
        if not (isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Call)):
            raise ActionError("syntax", f"expected only function calls, got {type(statement).__name__}")
        calls.append(_call(statement.value))
    return calls


def _bind(function: Callable, call_name: str, args: tuple, kwargs: dict[str, Any]) -> inspect.BoundArguments:
    try:
        return inspect.signature(function).bind(*args, **kwargs)
    except TypeError as exc:
        raise ActionError("bad_arguments", f"{call_name}: {exc}") from None


# ---------------------------------------------------------------------------------------------
# Per-step conversion state


@dataclass
class _Step:
    frame: Frame
    position: tuple[float, float] | None = None  # where the mouse is after the previous call

    def at(self, x: Any, y: Any, what: str) -> tuple[float, float]:
        """A pointer position; pyautogui also accepts the pair as the first argument."""
        if y is None and isinstance(x, (list, tuple)):
            return self.moved(self.frame.pair(x, what))
        if x is None or y is None:
            raise ActionError("bad_arguments", f"{what} needs both x and y")
        return self.moved(self.frame.point(x, y, what))

    def moved(self, point: tuple[float, float]) -> tuple[float, float]:
        self.position = point
        return point


def _xy(name: str, point: tuple[float, float]) -> Action:
    return Action.of(name, x=point[0], y=point[1])


def _swipe_towards(direction: Any, what: str) -> Action:
    start, end = DIRECTION_SWIPES[_direction(direction, what)]
    return Action.of("swipe", from_coord=start, to_coord=end)


def _final(answer: Any, what: str) -> Action:
    return Action.of("final_answer", answer=_answer(answer, what))


def _wait(seconds: Any) -> Action:
    return Action.of("wait", seconds=DEFAULT_WAIT_SECONDS if seconds is None else seconds)


# ---------------------------------------------------------------------------------------------
# pyautogui


_BUTTONS = {"left": "left", "primary": "left", "right": "right", "secondary": "right"}


def _button(value: Any, call: str) -> str:
    if not isinstance(value, str) or value not in _BUTTONS:
        raise ActionError("unsupported_action", f"{call} with button={value!r}")
    return _BUTTONS[value]


# The converters below take pyautogui's parameters in pyautogui's positional order; timing and
# logging parameters (interval, duration, tween, logScreenshot, _pause) are accepted and ignored.


def _pg_click(
    s: _Step,
    x=None,
    y=None,
    clicks=1,
    interval=None,
    button="left",
    duration=None,
    tween=None,
    logScreenshot=None,
    _pause=None,
):
    point = s.at(x, y, "click")
    kinds = {("left", 1): "click", ("left", 2): "double_click", ("right", 1): "right_click"}
    kind = kinds.get((_button(button, "click"), clicks)) if type(clicks) is int else None
    if kind is None:
        raise ActionError("unsupported_action", f"click with button={button!r}, clicks={clicks!r}")
    return [_xy(kind, point)]


def _pg_double_click(
    s: _Step, x=None, y=None, interval=None, button="left", duration=None, tween=None, logScreenshot=None, _pause=None
):
    if _button(button, "doubleClick") != "left":
        raise ActionError("unsupported_action", f"doubleClick with button={button!r}")
    return [_xy("double_click", s.at(x, y, "doubleClick"))]


def _pg_right_click(
    s: _Step, x=None, y=None, interval=None, duration=None, tween=None, logScreenshot=None, _pause=None
):
    return [_xy("right_click", s.at(x, y, "rightClick"))]


def _pg_move_to(s: _Step, x=None, y=None, duration=None, tween=None, logScreenshot=None, _pause=None):
    return [_xy("move_mouse", s.at(x, y, "moveTo"))]


def _pg_write(s: _Step, message, interval=None, logScreenshot=None, _pause=None):
    return [Action.of("type", text=message)]


def _pg_hotkey(s: _Step, *keys, interval=None, logScreenshot=None, _pause=None):
    names = keys[0] if len(keys) == 1 and isinstance(keys[0], list) else keys
    return [Action.of("press", keys=list(names))]


def _pg_press(s: _Step, keys, presses=1, interval=None, logScreenshot=None, _pause=None):
    if type(presses) is not int or not 1 <= presses <= MAX_CALLS:
        raise ActionError("bad_arguments", f"press: presses must be an integer in [1, {MAX_CALLS}]")
    sequence = _keys(keys, "press.keys")
    if len(sequence) * presses > MAX_CALLS:
        raise ActionError("too_many_calls", f"press of {len(sequence)} keys x {presses}")
    return [Action.of("press", keys=[key]) for _ in range(presses) for key in sequence]


def _pg_drag_to(
    s: _Step,
    x=None,
    y=None,
    duration=None,
    tween=None,
    button="left",
    logScreenshot=None,
    _pause=None,
    mouseDownUp=True,
):
    if _button(button, "dragTo") != "left" or mouseDownUp is not True:
        raise ActionError("unsupported_action", f"dragTo with button={button!r}, mouseDownUp={mouseDownUp!r}")
    start = s.position
    if start is None:
        raise ActionError("bad_arguments", "dragTo without a known start (no moveTo/click before it in the step)")
    return [Action.of("drag", from_coord=start, to_coord=s.at(x, y, "dragTo"))]


def _scroll_amount(value: float, scale: float, what: str) -> int:
    amount = abs(value) * scale
    if not amount <= MAX_SCROLL_AMOUNT:
        raise ActionError("out_of_range", f"{what} scrolls more than {MAX_SCROLL_AMOUNT}")
    return int(amount)


def _pg_scroll_actions(s: _Step, call: str, clicks, x, y, page, towards_start: str, towards_end: str) -> list[Action]:
    """pyautogui `scroll`/`hscroll`. `clicks` has pyautogui's sign (positive = up for scroll,
    right for hscroll); `page` the reference's (negative = up / left, amount |page| * 100)."""
    if (clicks is None) == (page is None):
        raise ActionError("bad_arguments", f"{call} needs either clicks or page")
    actions = [] if x is None and y is None else [_xy("move_mouse", s.at(x, y, call))]
    if page is not None:
        p = _finite(page, f"{call}.page")
        direction, amount = (towards_start if p < 0 else towards_end), _scroll_amount(p, 100, call)
    else:
        c = _finite(clicks, f"{call}.clicks")
        positive, other = ("up", "down") if call == "scroll" else ("right", "left")
        direction, amount = (positive if c > 0 else other), _scroll_amount(c, 1, call)
    actions.append(Action.of("scroll", direction=direction, amount=amount))
    return actions


def _pg_scroll(s: _Step, clicks=None, x=None, y=None, logScreenshot=None, _pause=None, page=None):
    return _pg_scroll_actions(s, "scroll", clicks, x, y, page, "up", "down")


def _pg_hscroll(s: _Step, clicks=None, x=None, y=None, logScreenshot=None, _pause=None, page=None):
    return _pg_scroll_actions(s, "hscroll", clicks, x, y, page, "left", "right")


def _pg_sleep(s: _Step, seconds):
    return [_wait(seconds)]


def _terminate(s: _Step, status):
    return [_final(status, "terminate.status")]


def _answer_call(s: _Step, text):
    return [_final(text, "answer.text")]


PYAUTOGUI_CALLS: dict[str, Callable[..., list[Action]]] = {
    "click": _pg_click,
    "leftClick": _pg_click,
    "doubleClick": _pg_double_click,
    "rightClick": _pg_right_click,
    "moveTo": _pg_move_to,
    "write": _pg_write,
    "typewrite": _pg_write,
    "hotkey": _pg_hotkey,
    "press": _pg_press,
    "dragTo": _pg_drag_to,
    "scroll": _pg_scroll,
    "hscroll": _pg_hscroll,
    "sleep": _pg_sleep,
    "terminate": _terminate,
    "answer": _answer_call,
}


# ---------------------------------------------------------------------------------------------
# mobile (AGUVIS / android_world call text, AndroidControl and AITW JSON)


def _m_click(s: _Step, x=None, y=None):
    return [_xy("click", s.at(x, y, "click"))]


def _m_long_press(s: _Step, x=None, y=None):
    return [_xy("long_press", s.at(x, y, "long_press"))]


def _m_swipe(s: _Step, from_coord=None, to_coord=None, direction=None):
    if direction is not None and from_coord is None and to_coord is None:
        return [_swipe_towards(direction, "swipe.direction")]
    if direction is None and from_coord is not None and to_coord is not None:
        start = s.frame.pair(from_coord, "swipe.from_coord")
        end = s.frame.pair(to_coord, "swipe.to_coord")
        return [Action.of("swipe", from_coord=start, to_coord=end)]
    raise ActionError("bad_arguments", "swipe needs from_coord and to_coord, or a direction")


def _m_scroll(s: _Step, direction):
    # The content moves `direction`, so the finger moves the opposite way.
    return [_swipe_towards(OPPOSITE[_direction(direction, "scroll.direction")], "scroll.direction")]


def _m_type(s: _Step, text):
    return [Action.of("type", text=text)]


def _m_open_app(s: _Step, app_name):
    return [Action.of("open_app", app_name=app_name)]


def _m_home(s: _Step):
    return [Action.of("navigate_home")]


def _m_back(s: _Step):
    return [Action.of("navigate_back")]


def _m_enter(s: _Step):
    return [Action.of("press", keys=["enter"])]


def _m_wait(s: _Step, seconds=None):
    return [_wait(seconds)]


def _m_status(s: _Step, goal_status=None, status=None):
    if (goal_status is None) == (status is None):
        raise ActionError("bad_arguments", "status needs goal_status (or status)")
    return [_final(status if goal_status is None else goal_status, "status")]


MOBILE_CALLS: dict[str, Callable[..., list[Action]]] = {
    "click": _m_click,
    "tap": _m_click,
    "long_press": _m_long_press,
    "swipe": _m_swipe,
    "scroll": _m_scroll,
    "type": _m_type,
    "input_text": _m_type,
    "open_app": _m_open_app,
    "home": _m_home,
    "navigate_home": _m_home,
    "back": _m_back,
    "navigate_back": _m_back,
    "keyboard_enter": _m_enter,
    "enter": _m_enter,
    "wait": _m_wait,
    "terminate": _terminate,
    "answer": _answer_call,
    "status": _m_status,
}

AITW_CODES = {
    3: "TYPE",
    4: "DUAL_POINT",
    5: "PRESS_BACK",
    6: "PRESS_HOME",
    7: "PRESS_ENTER",
    10: "STATUS_TASK_COMPLETE",
    11: "STATUS_TASK_IMPOSSIBLE",
}


def _aitw_point(value: Any, frame: Frame, what: str) -> tuple[float, float]:
    # AITW stores points as [y, x].
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ActionError("bad_arguments", f"{what} must be a pair [y, x]")
    return frame.point(value[1], value[0], what)


def _aitw(kind: str, obj: Mapping[str, Any], frame: Frame) -> list[Action]:
    if kind == "DUAL_POINT":
        if "touch_point" not in obj or "lift_point" not in obj:
            raise ActionError("bad_arguments", "DUAL_POINT needs touch_point and lift_point")
        touch = _aitw_point(obj["touch_point"], frame, "touch_point")
        lift = _aitw_point(obj["lift_point"], frame, "lift_point")
        if math.dist(touch, lift) <= AITW_TAP_DISTANCE:
            return [_xy("click", touch)]
        return [Action.of("swipe", from_coord=touch, to_coord=lift)]
    if kind == "TYPE":
        return [Action.of("type", text=obj.get("typed_text"))]
    simple = {
        "PRESS_BACK": Action.of("navigate_back"),
        "PRESS_HOME": Action.of("navigate_home"),
        "PRESS_ENTER": Action.of("press", keys=["enter"]),
        "STATUS_TASK_COMPLETE": Action.of("final_answer", answer="success"),
        "STATUS_TASK_IMPOSSIBLE": Action.of("final_answer", answer="infeasible"),
    }
    if kind in simple:
        return [simple[kind]]
    raise ActionError("unsupported_action", f"AITW action {kind!r}")


def _mobile_json(obj: Mapping[str, Any], frame: Frame) -> list[Action]:
    kind = obj.get("action_type")
    if isinstance(kind, int) and not isinstance(kind, bool):
        if kind not in AITW_CODES:
            raise ActionError("unsupported_action", f"AITW action code {kind}")
        return _aitw(AITW_CODES[kind], obj, frame)
    if not isinstance(kind, str):
        raise ActionError("bad_arguments", "a mobile action object needs a string action_type")
    if kind.isupper():
        return _aitw(kind, obj, frame)
    converter = MOBILE_CALLS.get(kind)
    if converter is None:
        raise ActionError("unsupported_action", f"mobile action_type {_short(kind)!r}")
    # Only the converter's parameters are read; other keys are dataset metadata.
    parameters = list(inspect.signature(converter).parameters)[1:]
    kwargs = {key: obj[key] for key in parameters if key in obj}
    step = _Step(frame)
    bound = _bind(converter, kind, (step,), kwargs)
    return converter(*bound.args, **bound.kwargs)


# ---------------------------------------------------------------------------------------------
# web (Mind2Web-like)


def _box(value: Any, convention: str) -> list[Any]:
    if isinstance(value, str):
        parts = value.split(",")
        if len(parts) != 4:
            raise ActionError("bad_arguments", "bbox string must be 'a,b,c,d'")
        try:
            value = [float(part) for part in parts]
        except ValueError:
            raise ActionError("bad_arguments", "bbox string must hold four numbers") from None
    if not isinstance(value, (list, tuple)) or len(value) != 4:
        raise ActionError("bad_arguments", f"bbox must be four numbers ({convention})")
    return [_finite(v, "bbox") for v in value]


def box_centre(bbox: Any, convention: str, frame: Frame) -> tuple[float, float]:
    """The centre of an element box as fractions of the screen."""
    if convention not in BBOX_FORMATS:
        raise ActionError("bad_arguments", f"bbox convention must be one of {list(BBOX_FORMATS)}")
    a, b, c, d = _box(bbox, convention)
    if convention == "xywh":
        if c < 0 or d < 0:
            raise ActionError("bad_arguments", "bbox width and height must not be negative")
        x, y = a + c / 2, b + d / 2
    else:
        if c < a or d < b:
            raise ActionError("bad_arguments", "bbox right/bottom must not be left of/above left/top")
        x, y = (a + c) / 2, (b + d) / 2
    return frame.point(x, y, "bbox centre")


def _web(obj: Mapping[str, Any], frame: Frame, convention: str) -> list[Action]:
    operation = obj.get("operation", obj.get("op"))
    value = obj.get("value")
    if isinstance(operation, Mapping):  # Mind2Web: {"op": "TYPE", "value": "...", "original_op": ...}
        value = operation.get("value", value)
        operation = operation.get("op")
    if not isinstance(operation, str):
        raise ActionError("bad_arguments", "a web action needs an operation name")
    operation = operation.upper()
    if operation not in ("CLICK", "TYPE", "SELECT", "HOVER"):
        raise ActionError("unsupported_action", f"web operation {_short(operation)!r}")
    if "bbox" not in obj:
        raise ActionError("bad_arguments", f"{operation} needs the element's bbox")
    centre = box_centre(obj["bbox"], convention, frame)
    if operation == "HOVER":
        return [_xy("move_mouse", centre)]
    if operation == "CLICK":
        return [_xy("click", centre)]
    return [_xy("click", centre), Action.of("type", text=value)]


# ---------------------------------------------------------------------------------------------
# unified call text


def _unified_call(call: Call, frame: Frame) -> Action:
    if call.prefix is not None or call.name not in PARAMETERS:
        raise ActionError("unsupported_action", f"{_short(call.name)!r} is not a unified function")
    parameters = PARAMETERS[call.name]
    signature = inspect.Signature(
        [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD) for name, _ in parameters]
    )
    try:
        bound = signature.bind(*call.args, **call.kwargs).arguments
    except TypeError as exc:
        raise ActionError("bad_arguments", f"{call.name}: {exc}") from None
    for name, check in parameters:
        if check is _coord:
            bound[name] = frame.fraction(bound[name], name, f"{call.name}.{name}")
        elif check is _point:
            bound[name] = frame.pair(bound[name], f"{call.name}.{name}")
    return Action.of(call.name, **bound)


def parse_unified(text: str, frame: Frame = FRACTION) -> list[Action]:
    """Unified call text (one call per line or `;`) -> its actions. Coordinates are fractions
    unless `frame` says otherwise."""
    return [_unified_call(call, frame) for call in parse_calls(text)]


# ---------------------------------------------------------------------------------------------
# Entry point


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


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


# ---------------------------------------------------------------------------------------------
# Chat normalisation (reference rules)

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
