"""The web dialect (Mind2Web-like operations on an element box).

Web element boxes become their centre. Two box conventions, chosen per source (`bbox`):
`xywh` = [left, top, width, height] (Mind2Web's `bounding_box_rect`, the default) and
`xyxy` = [left, top, right, bottom]; both in the frame's unit, as a list or a "a,b,c,d" string.
`CLICK` -> click(centre); `TYPE` and `SELECT` -> click(centre) then type(value) (a select box is
focused and the option typed); `HOVER` -> move_mouse(centre).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from etl.sources.gui.actions import BBOX_FORMATS, Action, ActionError, _finite, _short
from etl.sources.gui.calls import _xy
from etl.sources.gui.coordinates import Frame


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
