"""ScreenSpot(-V2)'s rows as the reference answers `click_accuracy` scores (etl.train.metrics).

A ScreenSpot-V2 row names an element of a screenshot: `bbox` (OS-Copilot/ScreenSpot-v2's
annotation files and the lmms-lab/ScreenSpot-v2 parquet mirror: [left, top, width, height] in
pixels, `xywh`), `data_source` (ios, android, macos, windows, or a web site: shop, forum, tool,
gitlab) and `data_type` (text, icon). Its reference answer is the box in fractions of the
screenshot, normalised by the same `Frame` as the training data's coordinates, with the platform
ScreenSpot-V2 reports it under:

    screenspot_reference([42, 1102, 197, 70], 1170, 2532, "ios", "text")
    # '{"bbox": [0.0359, 0.4352, 0.2043, 0.4629], "platform": "mobile", "element_type": "text"}'
"""

from __future__ import annotations

import json
from typing import Any

from etl.sources.gui.actions import BBOX_FORMATS
from etl.sources.gui.coordinates import Frame

# ScreenSpot's `data_source` -> the platform ScreenSpot-V2 reports (mobile, desktop, web).
SCREENSPOT_PLATFORMS = {"ios": "mobile", "android": "mobile", "macos": "desktop", "windows": "desktop"}


def screenspot_reference(
    bbox: Any, width: int, height: int, data_source: str, data_type: str, bbox_format: str = "xywh"
) -> str:
    """A ScreenSpot(-V2) row's reference answer, as JSON: `bbox` ([left, top, right, bottom] in
    fractions of the `width` x `height` screenshot), `platform` and `element_type`. `bbox` is in
    pixels, [left, top, width, height] (`xywh`, ScreenSpot's own) or [left, top, right, bottom]
    (`xyxy`); a box outside the screenshot is an `ActionError` (`out_of_range`)."""
    if bbox_format not in BBOX_FORMATS:
        raise ValueError(f"bbox_format must be one of {list(BBOX_FORMATS)}, got {bbox_format!r}")
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        raise ValueError(f"bbox must be four numbers, got {bbox!r}")
    left, top, a, b = bbox
    right, bottom = (left + a, top + b) if bbox_format == "xywh" else (a, b)
    frame = Frame("pixels", width, height)
    box = [*frame.point(left, top, "bbox"), *frame.point(right, bottom, "bbox")]
    platform = SCREENSPOT_PLATFORMS.get(str(data_source).lower(), "web")
    return json.dumps({"bbox": box, "platform": platform, "element_type": str(data_type).lower()})
