"""The pyautogui dialect (desktop call text).

Fixed conversion rules: `click(button="right")` -> right_click, `click(clicks=2)` -> double_click;
`click()`, `doubleClick()`, `rightClick()` without coordinates are the unified action without
coordinates (smol2operator's `double_click()`); `press` of a list presses the keys one after another
(one `press` each), `hotkey` presses them together (also as `hotkey(keys=[...])`, AGUVIS's form);
`dragTo(from_coord=[x, y], to_coord=[x, y])` (AGUVIS's form) is one drag; `dragTo(x, y)` starts where
the previous call of the same step left the mouse (a `moveTo` right before it is folded into the
drag) and is an error without one; `scroll(clicks)` is pyautogui's own
sign (positive = up), `scroll(page=p)` follows the reference (p < 0 = up, amount int(|p|*100));
`scroll(.., x, y)` first moves the mouse there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from etl.sources.gui.actions import MAX_CALLS, MAX_SCROLL_AMOUNT, Action, ActionError, _finite, _keys
from etl.sources.gui.calls import _answer_call, _Step, _terminate, _wait, _xy

Point = tuple[float, float] | None

_BUTTONS = {"left": "left", "primary": "left", "right": "right", "secondary": "right"}


def _pointer(s: _Step, x: Any, y: Any, what: str) -> Point:
    """The call's position, or None for a click without coordinates (where the mouse is)."""
    if x is None and y is None:
        return None
    return s.at(x, y, what)


def _clicked(kind: str, point: Point) -> Action:
    return Action.of(kind) if point is None else _xy(kind, point)


def _button(value: Any, call: str) -> str:
    if not isinstance(value, str) or value not in _BUTTONS:
        raise ActionError("unsupported_action", f"{call} with button={value!r}")
    return _BUTTONS[value]


# The converters below take pyautogui's parameters in pyautogui's positional order; timing and
# logging parameters (interval, duration, tween, logScreenshot, _pause) are accepted and ignored.


def _click(
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
    point = _pointer(s, x, y, "click")
    kinds = {("left", 1): "click", ("left", 2): "double_click", ("right", 1): "right_click"}
    kind = kinds.get((_button(button, "click"), clicks)) if type(clicks) is int else None
    if kind is None:
        raise ActionError("unsupported_action", f"click with button={button!r}, clicks={clicks!r}")
    return [_clicked(kind, point)]


def _double_click(
    s: _Step, x=None, y=None, interval=None, button="left", duration=None, tween=None, logScreenshot=None, _pause=None
):
    if _button(button, "doubleClick") != "left":
        raise ActionError("unsupported_action", f"doubleClick with button={button!r}")
    return [_clicked("double_click", _pointer(s, x, y, "doubleClick"))]


def _right_click(s: _Step, x=None, y=None, interval=None, duration=None, tween=None, logScreenshot=None, _pause=None):
    return [_clicked("right_click", _pointer(s, x, y, "rightClick"))]


def _move_to(s: _Step, x=None, y=None, duration=None, tween=None, logScreenshot=None, _pause=None):
    return [_xy("move_mouse", s.at(x, y, "moveTo"))]


def _write(s: _Step, message, interval=None, logScreenshot=None, _pause=None):
    return [Action.of("type", text=message)]


def _hotkey(s: _Step, *names, keys=None, interval=None, logScreenshot=None, _pause=None):
    if keys is not None and names:
        raise ActionError("bad_arguments", "hotkey takes keys positionally or as keys=, not both")
    if keys is not None:
        names = tuple(_keys(keys, "hotkey.keys"))
    elif len(names) == 1 and isinstance(names[0], list):
        names = tuple(names[0])
    return [Action.of("press", keys=list(names))]


def _press(s: _Step, keys, presses=1, interval=None, logScreenshot=None, _pause=None):
    if type(presses) is not int or not 1 <= presses <= MAX_CALLS:
        raise ActionError("bad_arguments", f"press: presses must be an integer in [1, {MAX_CALLS}]")
    sequence = _keys(keys, "press.keys")
    if len(sequence) * presses > MAX_CALLS:
        raise ActionError("too_many_calls", f"press of {len(sequence)} keys x {presses}")
    return [Action.of("press", keys=[key]) for _ in range(presses) for key in sequence]


def _drag_to(
    s: _Step,
    x=None,
    y=None,
    duration=None,
    tween=None,
    button="left",
    logScreenshot=None,
    _pause=None,
    mouseDownUp=True,
    from_coord=None,
    to_coord=None,
):
    if _button(button, "dragTo") != "left" or mouseDownUp is not True:
        raise ActionError("unsupported_action", f"dragTo with button={button!r}, mouseDownUp={mouseDownUp!r}")
    if from_coord is not None or to_coord is not None:
        if from_coord is None or to_coord is None or x is not None or y is not None:
            raise ActionError("bad_arguments", "dragTo takes from_coord and to_coord together, or x and y")
        origin = s.frame.pair(from_coord, "dragTo.from_coord")
        return [Action.of("drag", from_coord=origin, to_coord=s.moved(s.frame.pair(to_coord, "dragTo.to_coord")))]
    start = s.position
    if start is None:
        raise ActionError("bad_arguments", "dragTo without a known start (no moveTo/click before it in the step)")
    return [Action.of("drag", from_coord=start, to_coord=s.at(x, y, "dragTo"))]


def _scroll_amount(value: float, scale: float, what: str) -> int:
    amount = abs(value) * scale
    if not amount <= MAX_SCROLL_AMOUNT:
        raise ActionError("out_of_range", f"{what} scrolls more than {MAX_SCROLL_AMOUNT}")
    return int(amount)


def _scroll_actions(s: _Step, call: str, clicks, x, y, page, towards_start: str, towards_end: str) -> list[Action]:
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


def _scroll(s: _Step, clicks=None, x=None, y=None, logScreenshot=None, _pause=None, page=None):
    return _scroll_actions(s, "scroll", clicks, x, y, page, "up", "down")


def _hscroll(s: _Step, clicks=None, x=None, y=None, logScreenshot=None, _pause=None, page=None):
    return _scroll_actions(s, "hscroll", clicks, x, y, page, "left", "right")


def _sleep(s: _Step, seconds):
    return [_wait(seconds)]


PYAUTOGUI_CALLS: dict[str, Callable[..., list[Action]]] = {
    "click": _click,
    "leftClick": _click,
    "doubleClick": _double_click,
    "rightClick": _right_click,
    "moveTo": _move_to,
    "write": _write,
    "typewrite": _write,
    "hotkey": _hotkey,
    "press": _press,
    "dragTo": _drag_to,
    "scroll": _scroll,
    "hscroll": _hscroll,
    "sleep": _sleep,
    "terminate": _terminate,
    "answer": _answer_call,
}
