"""Encoded image bytes -> RGB uint8 pixels at the embedding size, on the CPU with PIL.

Every decoder here (and `udfs.gpu_decode` on a GPU) refuses a canvas over `MAX_DECODE_PIXELS`,
read from the header before any pixel is decoded.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np
from PIL import Image

RESIZE_FILTER = Image.Resampling.BILINEAR
"""The resampling filter of `decode_and_resize` (see `udfs.sscd`'s docstring)."""
MAX_DECODE_PIXELS = 178_956_970
"""Larger canvases fail without being decoded: Pillow's own bomb limit (twice `Image.MAX_IMAGE_PIXELS`,
where `Image.open` raises), which the project never lifts; also the default and the ceiling of
`clean.max_pixels`."""


class DecodedImages(NamedTuple):
    """`pixels`: uint8 [n, size, size, 3] (zeros where decoding failed); `failed`: bool [n]."""

    pixels: np.ndarray
    failed: np.ndarray

    @property
    def failed_indices(self) -> list[int]:
        return np.flatnonzero(self.failed).tolist()


def decode_image(data: bytes | None, size: int) -> np.ndarray | None:
    """Decode one image to RGB uint8 [size, size, 3] (aspect ratio ignored), None if it cannot be."""
    if not data:
        return None
    # No warnings.catch_warnings here: it is process-global state, unsafe with decode threads.
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > MAX_DECODE_PIXELS:  # read from the header
                return None
            opened: Image.Image = image
            if opened.mode == "P" and "transparency" in opened.info:
                opened = opened.convert("RGBA")
            rgb = opened.convert("RGB").resize((size, size), RESIZE_FILTER)
            return np.asarray(rgb, dtype=np.uint8)
    except Exception:  # noqa: BLE001 - any undecodable input becomes a failed row
        return None


def decode_and_resize(blobs: Sequence[bytes | None], size: int, workers: int = 1) -> DecodedImages:
    """Decode encoded images into one uint8 NHWC batch; never raises for a bad image.

    A None, empty, truncated or otherwise undecodable entry gives a zero image and is marked in
    `failed`, so the caller can emit a null/NaN embedding for it.
    """
    pixels = np.zeros((len(blobs), size, size, 3), dtype=np.uint8)
    failed = np.zeros(len(blobs), dtype=bool)
    if workers > 1 and len(blobs) > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            decoded = list(pool.map(lambda blob: decode_image(blob, size), blobs))
    else:
        decoded = [decode_image(blob, size) for blob in blobs]
    for row, image in enumerate(decoded):
        if image is None:
            failed[row] = True
        else:
            pixels[row] = image
    return DecodedImages(pixels, failed)
