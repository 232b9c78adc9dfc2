"""The mobile dialect: AGUVIS / android_world call text, AndroidControl and AITW JSON objects.

Fixed conversion rules: `swipe(direction=d)` is a finger movement across the screen centre,
`DIRECTION_SWIPES`; `scroll(direction=d)` (AndroidControl, android_world) moves the *content* d,
i.e. the finger the opposite way. AITW `DUAL_POINT` is a tap when its points are at most 0.04 apart
(AITW's own threshold, in fractions), else a swipe. `wait` without a duration is
`DEFAULT_WAIT_SECONDS`. AITW `STATUS_TASK_COMPLETE`/`_IMPOSSIBLE` -> final_answer("success"/"infeasible").
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from typing import Any

from etl.sources.gui.actions import Action, ActionError, _direction, _short
from etl.sources.gui.calls import _answer_call, _bind, _final, _Step, _terminate, _wait, _xy
from etl.sources.gui.coordinates import Frame

AITW_TAP_DISTANCE = 0.04
OPPOSITE = {"up": "down", "down": "up", "left": "right", "right": "left"}
# Finger movement for a direction-only swipe: across the screen centre, 60% of the screen.
DIRECTION_SWIPES = {
    "up": ((0.5, 0.8), (0.5, 0.2)),
    "down": ((0.5, 0.2), (0.5, 0.8)),
    "left": ((0.8, 0.5), (0.2, 0.5)),
    "right": ((0.2, 0.5), (0.8, 0.5)),
}


def _swipe_towards(direction: Any, what: str) -> Action:
    start, end = DIRECTION_SWIPES[_direction(direction, what)]
    return Action.of("swipe", from_coord=start, to_coord=end)


def _click(s: _Step, x=None, y=None):
    return [_xy("click", s.at(x, y, "click"))]


def _long_press(s: _Step, x=None, y=None):
    return [_xy("long_press", s.at(x, y, "long_press"))]


def _swipe(s: _Step, from_coord=None, to_coord=None, direction=None):
    if direction is not None and from_coord is None and to_coord is None:
        return [_swipe_towards(direction, "swipe.direction")]
    if direction is None and from_coord is not None and to_coord is not None:
        start = s.frame.pair(from_coord, "swipe.from_coord")
        end = s.frame.pair(to_coord, "swipe.to_coord")
        return [Action.of("swipe", from_coord=start, to_coord=end)]
    raise ActionError("bad_arguments", "swipe needs from_coord and to_coord, or a direction")


def _scroll(s: _Step, direction):
    # The content moves `direction`, so the finger moves the opposite way.
    return [_swipe_towards(OPPOSITE[_direction(direction, "scroll.direction")], "scroll.direction")]


def _type(s: _Step, text):
    return [Action.of("type", text=text)]


def _open_app(s: _Step, app_name):
    return [Action.of("open_app", app_name=app_name)]


def _home(s: _Step):
    return [Action.of("navigate_home")]


def _back(s: _Step):
    return [Action.of("navigate_back")]


def _enter(s: _Step):
    return [Action.of("press", keys=["enter"])]


def _wait_for(s: _Step, seconds=None):
    return [_wait(seconds)]


def _status(s: _Step, goal_status=None, status=None):
    if (goal_status is None) == (status is None):
        raise ActionError("bad_arguments", "status needs goal_status (or status)")
    return [_final(status if goal_status is None else goal_status, "status")]


MOBILE_CALLS: dict[str, Callable[..., list[Action]]] = {
    "click": _click,
    "tap": _click,
    "long_press": _long_press,
    "swipe": _swipe,
    "scroll": _scroll,
    "type": _type,
    "input_text": _type,
    "open_app": _open_app,
    "home": _home,
    "navigate_home": _home,
    "back": _back,
    "navigate_back": _back,
    "keyboard_enter": _enter,
    "enter": _enter,
    "wait": _wait_for,
    "terminate": _terminate,
    "answer": _answer_call,
    "status": _status,
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
