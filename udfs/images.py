"""Image validation and FineVision's size rule, as a plain function on bytes.

`clean_image` is what the clean stage's Arrow UDF runs per image; it is tested and benchmarked
without Spark. The pixel count comes from the header and is checked before any pixel is decoded,
so a small file that declares a huge canvas (a decompression bomb) never allocates it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from udfs.decode import MAX_DECODE_PIXELS

KEEP_MODES = {"RGB", "L", "RGBA"}


@dataclass(frozen=True)
class ImageRules:
    max_side: int = 2048
    max_pixels: int = MAX_DECODE_PIXELS
    jpeg_quality: int = 95


@dataclass(frozen=True)
class CleanedImage:
    data: bytes
    width: int
    height: int
    changed: bool


class ImageRejected(ValueError):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


def target_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """Longest side down to max_side, keeping aspect ratio; never upscale."""
    longest = max(width, height)
    if longest <= max_side:
        return width, height
    scale = max_side / longest
    return max(1, round(width * scale)), max(1, round(height * scale))


def clean_image(data: bytes, rules: ImageRules) -> CleanedImage:
    """Decode and validate one image; downscale and convert only where needed.

    Raises ImageRejected with reason `decompression_bomb` or `corrupt_image`.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > rules.max_pixels:
                raise ImageRejected(
                    "decompression_bomb",
                    f"header declares {width}x{height} = {width * height} pixels, limit {rules.max_pixels}",
                )
            image.load()
            source_format = image.format
            new_size = target_size(width, height, rules.max_side)
            needs_mode = image.mode not in KEEP_MODES
            if new_size == (width, height) and not needs_mode:
                return CleanedImage(data, width, height, changed=False)
            out = (
                image.convert("RGBA" if "A" in image.mode or "transparency" in image.info else "RGB")
                if needs_mode
                else image
            )
            if new_size != (width, height):
                out = out.resize(new_size, Image.Resampling.LANCZOS)
            buffer = io.BytesIO()
            if source_format == "JPEG" and out.mode in ("RGB", "L"):
                out.save(buffer, format="JPEG", quality=rules.jpeg_quality)
            else:
                out.save(buffer, format="PNG")
            return CleanedImage(buffer.getvalue(), out.width, out.height, changed=True)
    except ImageRejected:
        raise
    except Image.DecompressionBombError as exc:  # Pillow's own limit, which clean.max_pixels never exceeds
        raise ImageRejected("decompression_bomb", str(exc)) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageRejected("corrupt_image", f"cannot decode image: {exc}") from None
