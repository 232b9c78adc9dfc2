"""etl/pages.py: the one template environment (escaping, number formats) and the one thumbnail helper."""

from __future__ import annotations

import base64
import io

from PIL import Image

from etl.pages import DASH, ENVIRONMENT, Thumbnail, decimal, percent, thousands, thumbnail, thumbnail_html
from tests.conftest import bomb_png, png_bytes


def test_a_thumbnail_is_a_small_jpeg_or_a_note_saying_why_not():
    small = thumbnail(png_bytes((400, 100)), size=64)
    assert small.note is None
    with Image.open(io.BytesIO(base64.b64decode(small.jpeg_base64))) as image:
        assert image.format == "JPEG" and image.size == (64, 16)

    assert thumbnail(None) == Thumbnail(None, "no image bytes")
    assert thumbnail(b"not an image").note.startswith("unreadable image:")
    # 60M pixels: under Pillow's bomb limit, over what a page previews; nothing is decoded
    assert thumbnail(bomb_png(10_000, 6_000)) == Thumbnail(None, "image too large to preview")


def test_every_value_a_template_prints_is_escaped():
    evil = '<img src=x onerror="alert(1)">'
    assert thumbnail_html(None) == "<em>no image bytes</em>"
    note = ENVIRONMENT.get_template("macros.html").module.thumbnail(Thumbnail(None, evil))
    assert "<img" not in str(note) and "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in str(note)
    turns = ENVIRONMENT.get_template("macros.html").module.turns([{"user": evil, "assistant": "a" * 12}], 3, 10)
    assert "<img" not in str(turns) and "aaaaaaaaaa&hellip;" in str(turns) and "(+2 more turn(s))" in str(turns)


def test_numbers_print_with_separators_and_a_dash_when_missing():
    assert (thousands(1234567), thousands(None)) == ("1,234,567", DASH)
    assert (percent(0.01234, 2), percent(0.5), percent(None)) == ("1.23%", "50.0%", DASH)
    assert (decimal(3.14159), decimal(3.14159, 3), decimal(None)) == ("3.14", "3.142", DASH)
    assert ENVIRONMENT.from_string("{{ v|thousands }}").render(v=None) == "&mdash;"  # not escaped twice
