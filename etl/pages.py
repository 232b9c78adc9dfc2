"""HTML pages (review, report, preview) from the Jinja2 templates in etl/templates/.

One environment escapes every value a template prints (autoescape); templates never mark data as
safe. Numbers are formatted by the filters below; images travel as `Thumbnail`s (base64 JPEG or
a note) and only the `thumbnail` macro of `macros.html` turns them into <img> tags.

    html = render("contamination.html", hits=hits, counts=counts, ...)
"""

from __future__ import annotations

import base64
import io
from typing import Any, NamedTuple

import jinja2
import markupsafe
from PIL import Image

LARGEST_PREVIEW_PIXELS = 50_000_000


class Thumbnail(NamedTuple):
    """A small JPEG of an image (`jpeg_base64`), or why there is none (`note`)."""

    jpeg_base64: str | None
    note: str | None


def thumbnail(data: bytes | None, size: int = 256) -> Thumbnail:
    """A JPEG of at most size x size pixels; never raises (the page must render whatever the image is)."""
    if data is None:
        return Thumbnail(None, "no image bytes")
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > LARGEST_PREVIEW_PIXELS:
                return Thumbnail(None, "image too large to preview")
            image.thumbnail((size, size))
            buffer = io.BytesIO()
            image.convert("RGB").save(buffer, format="JPEG", quality=80)
        return Thumbnail(base64.b64encode(buffer.getvalue()).decode(), None)
    except Exception as exc:  # noqa: BLE001 - any unreadable image becomes a note on the page
        return Thumbnail(None, f"unreadable image: {exc}")


DASH = markupsafe.Markup("&mdash;")  # what a missing value prints


def thousands(value: Any) -> str:
    return DASH if value is None else f"{int(value):,}"


def percent(value: Any, digits: int = 1) -> str:
    return DASH if value is None else f"{100 * value:.{digits}f}%"


def decimal(value: Any, digits: int = 2) -> str:
    return DASH if value is None else f"{value:.{digits}f}"


ENVIRONMENT = jinja2.Environment(
    loader=jinja2.PackageLoader("etl", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
ENVIRONMENT.filters.update(thousands=thousands, percent=percent, decimal=decimal)


def render(template: str, **context: Any) -> str:
    return ENVIRONMENT.get_template(template).render(**context)


def thumbnail_html(data: bytes | None, size: int = 256) -> str:
    """One image as an <img> tag with a data: URI (or its note), e.g. for a notebook's displayHTML."""
    macro = ENVIRONMENT.get_template("macros.html").module.thumbnail  # type: ignore[attr-defined]
    return str(macro(thumbnail(data, size)))
