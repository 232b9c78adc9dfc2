"""Photo-like JPEGs for the embedding benchmarks (numpy and PIL only, so GPU machines without
Spark can import it)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def make_images(n: int, seed: int = 0) -> list[bytes]:
    """Photo-like JPEGs (smooth gradients, blobs and noise): mostly 640x480, some portrait
    480x640, one in eight 1024x768."""
    rng = np.random.default_rng(seed)
    images = []
    for i in range(n):
        w, h = (1024, 768) if i % 8 == 0 else (480, 640) if i % 8 == 3 else (640, 480)
        x = np.linspace(0, 1, w, dtype=np.float32)[None, :, None]
        y = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
        colour = rng.uniform(40, 220, (1, 1, 3)).astype(np.float32)
        base = colour + 80 * (x * rng.uniform(-1, 1, 3) + y * rng.uniform(-1, 1, 3))
        cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.1, 0.4)
        blob = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r))
        base = base + blob * rng.uniform(-90, 90, 3) + rng.normal(0, 10, (h, w, 3))
        buffer = io.BytesIO()
        Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=90)
        images.append(buffer.getvalue())
    return images
