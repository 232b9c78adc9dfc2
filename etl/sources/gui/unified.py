"""The unified dialect: call text of the unified functions, as `render` writes it in either style."""

from __future__ import annotations

import inspect

from etl.sources.gui.actions import OPTIONAL_POINT, PARAMETERS, Action, ActionError, _coord, _point, _short
from etl.sources.gui.calls import Call, parse_calls
from etl.sources.gui.coordinates import FRACTION, Frame


def _unified_call(call: Call, frame: Frame) -> Action:
    if call.prefix is not None or call.name not in PARAMETERS:
        raise ActionError("unsupported_action", f"{_short(call.name)!r} is not a unified function")
    parameters = PARAMETERS[call.name]
    default = None if call.name in OPTIONAL_POINT else inspect.Parameter.empty
    signature = inspect.Signature(
        [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default) for name, _ in parameters]
    )
    try:
        bound = signature.bind(*call.args, **call.kwargs).arguments
    except TypeError as exc:
        raise ActionError("bad_arguments", f"{call.name}: {exc}") from None
    if call.name in OPTIONAL_POINT:
        given = {name for name in ("x", "y") if bound.get(name) is not None}
        if not given:
            return Action.of(call.name)  # smol2operator's `double_click()`: where the mouse is
        if given != {"x", "y"}:
            raise ActionError("bad_arguments", f"{call.name} takes both x and y, or neither")
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
