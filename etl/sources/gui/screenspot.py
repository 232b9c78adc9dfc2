"""ScreenSpot(-V2)'s rows as the reference answers `click_accuracy` scores (etl.train.metrics).

A ScreenSpot-V2 row names an element of a screenshot: `bbox`, `data_source` (ios, android, macos,
windows, or a web site: shop, forum, tool, gitlab) and `data_type` (text, icon). Its published forms
write the box differently (tests/fixtures/screenspot_v2.yaml cites each):

- the authors' annotation files (OS-Copilot/ScreenSpot-v2): [left, top, width, height] in pixels
  (`bbox_format: xywh`, `bbox_units: pixels`, the defaults);
- the parquet mirror that smol2operator, lmms-eval and ScreenSuite evaluate on
  (HongxinLi/ScreenSpot_v2, conf/benchmarks/gui.yaml): [left, top, right, bottom] in fractions of
  the screenshot (`bbox_format: xyxy`, `bbox_units: fraction`).

Its reference answer is the box as [left, top, right, bottom] fractions of the screenshot,
normalised by the same `Frame` as the training data's coordinates, with the platform ScreenSpot-V2
reports it under:

    screenspot_reference([42, 1102, 197, 70], 1170, 2532, "ios", "text")
    # '{"bbox": [0.0359, 0.4352, 0.2043, 0.4629], "platform": "mobile", "element_type": "text"}'
    screenspot_reference([0.0359, 0.4352, 0.2043, 0.4629], 1170, 2532, "ios", "text", "xyxy", "fraction")
    # the same answer

A box outside the screenshot (`out_of_range`) or one whose right or bottom edge comes before its
left or top (`bad_arguments`: what an [x, y, w, h] box read as [x1, y1, x2, y2] usually gives) is
an `ActionError`, so a mis-declared format is quarantined at ingest rather than scored.
"""

from __future__ import annotations

import json
from typing import Any, Literal, get_args

from etl.sources.gui.actions import BBOX_FORMATS, ActionError
from etl.sources.gui.coordinates import Frame

# ScreenSpot's `data_source` -> the platform ScreenSpot-V2 reports (mobile, desktop, web).
SCREENSPOT_PLATFORMS = {"ios": "mobile", "android": "mobile", "macos": "desktop", "windows": "desktop"}
# The units a ScreenSpot box may be written in (a `Frame`'s units).
BboxUnits = Literal["pixels", "fraction"]
BBOX_UNITS: tuple[str, ...] = get_args(BboxUnits)


def screenspot_reference(
    bbox: Any,
    width: int,
    height: int,
    data_source: str,
    data_type: str,
    bbox_format: str = "xywh",
    bbox_units: str = "pixels",
) -> str:
    """A ScreenSpot(-V2) row's reference answer, as JSON: `bbox` ([left, top, right, bottom] in
    fractions of the `width` x `height` screenshot), `platform` and `element_type`. `bbox` is
    [left, top, width, height] (`xywh`, the authors' own) or [left, top, right, bottom] (`xyxy`), in
    `pixels` of the screenshot or in `fraction`s of it."""
    if bbox_format not in BBOX_FORMATS:
        raise ValueError(f"bbox_format must be one of {list(BBOX_FORMATS)}, got {bbox_format!r}")
    if bbox_units not in BBOX_UNITS:
        raise ValueError(f"bbox_units must be one of {list(BBOX_UNITS)}, got {bbox_units!r}")
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        raise ValueError(f"bbox must be four numbers, got {bbox!r}")
    frame = Frame("pixels", width, height) if bbox_units == "pixels" else Frame("fraction")
    left, top, a, b = bbox
    right, bottom = (left + a, top + b) if bbox_format == "xywh" else (a, b)
    box = [*frame.point(left, top, "bbox"), *frame.point(right, bottom, "bbox")]
    if box[2] < box[0] or box[3] < box[1]:
        raise ActionError(
            "bad_arguments",
            f"bbox {list(bbox)} read as {bbox_format} ends before it starts (right < left or bottom < top)",
        )
    platform = SCREENSPOT_PLATFORMS.get(str(data_source).lower(), "web")
    return json.dumps({"bbox": box, "platform": platform, "element_type": str(data_type).lower()})
