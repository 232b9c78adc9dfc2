"""Decode and resize images on the GPU, for the TorchScript SSCD backend on GPU executors.

On a GPU worker, PIL decoding on the executor's few CPU cores, not the model, limits throughput.
Here JPEGs (nearly all of a web-scale corpus) are decoded by nvJPEG through
`torchvision.io.decode_jpeg(..., device="cuda")` in one batched call and resized on the GPU
(bilinear with antialiasing, like PIL's BILINEAR when downscaling). Anything else (PNG, a JPEG
nvJPEG refuses, e.g. CMYK) goes through the CPU path of `udfs.decode.decode_image`, so every
image is decoded somehow or marked failed, as on CPU.

The pixels differ slightly from PIL's (different JPEG IDCT and resampling arithmetic): SSCD
embeddings of the same image through the two paths agree to a cosine of about 0.99+, well
above the 0.95 decontamination threshold; `bench/embed_gpu.py` prints the measured minimum.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from udfs import decode

if TYPE_CHECKING:  # pragma: no cover
    import torch

_JPEG_MAGIC = b"\xff\xd8\xff"


def is_decodable_jpeg(data: bytes | None) -> bool:
    """A JPEG whose header says it is small enough to decode (bomb guard before nvJPEG)."""
    if not data or not data.startswith(_JPEG_MAGIC):
        return False
    try:
        with Image.open(io.BytesIO(data)) as image:  # reads the header only
            return image.format == "JPEG" and image.width * image.height <= decode.MAX_DECODE_PIXELS
    except Exception:  # noqa: BLE001 - not a readable JPEG: the CPU path decides
        return False


def resize_batch(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 NCHW (one shape) -> uint8 NHWC [n, size, size, 3], bilinear with antialiasing."""
    import torch

    x = torch.nn.functional.interpolate(
        images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )
    return x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


def decode_and_resize_on_device(
    blobs: Sequence[bytes | None], size: int, device: str
) -> tuple[torch.Tensor, np.ndarray]:
    """Encoded images -> (uint8 NHWC [n, size, size, 3] on `device`, failed bool [n]).

    Failed rows are zeros, as in `udfs.decode.decode_and_resize`. Never raises for a bad image.
    """
    import torch

    # torchvision >= 0.29 points to TorchCodec for decoding; its nvJPEG path still works.
    warnings.filterwarnings("ignore", "The image decoding and encoding capabilities of TorchVision", DeprecationWarning)
    from torchvision.io import ImageReadMode, decode_jpeg

    pixels = torch.zeros((len(blobs), size, size, 3), dtype=torch.uint8, device=device)
    failed = np.zeros(len(blobs), dtype=bool)
    jpeg_rows = [row for row, data in enumerate(blobs) if is_decodable_jpeg(data)]
    cpu_rows = sorted(set(range(len(blobs))) - set(jpeg_rows))

    if jpeg_rows:
        encoded = [torch.frombuffer(bytearray(blobs[row] or b""), dtype=torch.uint8) for row in jpeg_rows]
        try:
            decoded = decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device)
        except RuntimeError:  # one bad image fails the batched call: retry one by one
            decoded = [_decode_one(data, device) for data in encoded]
        by_shape: dict[tuple[int, ...], list[tuple[int, torch.Tensor]]] = {}
        for row, image in zip(jpeg_rows, decoded, strict=False):
            if image is None:
                cpu_rows.append(row)
            else:
                by_shape.setdefault(tuple(image.shape), []).append((row, image))
        for group in by_shape.values():  # one resize kernel per distinct input shape
            rows = torch.tensor([row for row, _ in group], device=device)
            pixels[rows] = resize_batch(torch.stack([image for _, image in group]), size)

    for row in cpu_rows:
        image = decode.decode_image(blobs[row], size)
        if image is None:
            failed[row] = True
        else:
            pixels[row] = torch.tensor(image, device=device)
    return pixels, failed


def _decode_one(encoded: torch.Tensor, device: str) -> torch.Tensor | None:
    from torchvision.io import ImageReadMode, decode_jpeg

    try:
        return decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device)
    except RuntimeError:
        return None
