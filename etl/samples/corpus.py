"""Shared plumbing of the sample corpus: the build context, deterministic file writers and the
ground-truth records (`manifest.json`) that later stages' tests check against.

Everything written here is byte-identical for the same seed: no timestamps, no absolute paths,
fixed tar headers, seeded random generators derived from the seed and a stable name.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageEnhance, PngImagePlugin

PARQUET_ROW_GROUP = 16  # small row groups: ingestion shards parquet per row group
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
TAR_MTIME = 1_704_067_200  # 2024-01-01T00:00:00Z, fixed so tar shards are reproducible

# image_too_large cannot trip at the default `ingest.max_image_bytes` (64 MiB) without a 64 MiB
# file in the corpus; the sample's too-large image is ~2 MB and tests lower the limit to this.
TEST_MAX_IMAGE_BYTES = 1024 * 1024


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def jpeg_bytes(image: Image.Image, quality: int = 90, subsampling: int = -1) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality, subsampling=subsampling)
    return buffer.getvalue()


def open_image(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def transform_copy(data: bytes, transformation: str) -> tuple[bytes, str]:
    """A transformed copy of an image, as a training set would hold it: (bytes, file extension).

    Steps (the names stored in the manifest), joined by `+` and applied left to right:
    `recompress` (the same pixels re-saved as PNG at zlib level 9 with a text chunk: new bytes,
    so a new image_id), `resize_<factor>` (bicubic), `upscale_<k>` (nearest, k x k blocks),
    `jpeg_q<quality>`, `jpeg444_q<quality>` (no chroma subsampling), `crop_<percent>pct` (a margin
    cut off every side, resized back), `brightness_<factor>`. The copy is stored as the last
    encoding step left it: JPEG after a JPEG step, else PNG.
    """
    image = open_image(data).convert("RGB")
    encoded: tuple[bytes, str] | None = None
    for step in transformation.split("+"):
        kind, _, value = step.partition("_")
        encoded = None
        if kind == "recompress":
            info = PngImagePlugin.PngInfo()
            info.add_text("Comment", "re-saved copy")
            buffer = io.BytesIO()
            image.save(buffer, format="PNG", compress_level=9, pnginfo=info)
            encoded = (buffer.getvalue(), "png")
        elif kind in ("jpeg", "jpeg444"):
            quality = int(value.removeprefix("q"))
            encoded = (jpeg_bytes(image, quality, subsampling=0 if kind == "jpeg444" else -1), "jpg")
            image = open_image(encoded[0]).convert("RGB")
        elif kind == "resize":
            factor = float(value)
            size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
            image = image.resize(size, Image.Resampling.BICUBIC)
        elif kind == "upscale":
            factor = int(value)
            image = image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)
        elif kind == "crop":
            percent = float(value.removesuffix("pct")) / 100
            dx, dy = round(image.width * percent), round(image.height * percent)
            original = image.size
            image = image.crop((dx, dy, image.width - dx, image.height - dy)).resize(original, Image.Resampling.BICUBIC)
        elif kind == "brightness":
            image = ImageEnhance.Brightness(image).enhance(float(value))
        else:
            raise ValueError(f"unknown transformation step {step!r}")
    return encoded if encoded is not None else (png_bytes(image), "png")


def decompression_bomb_png(width: int, height: int) -> bytes:
    """A complete, valid 1-bit PNG of width x height black pixels: tiny on disk, huge decoded."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return len(payload).to_bytes(4, "big") + kind + payload + zlib.crc32(kind + payload).to_bytes(4, "big")

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([1, 0, 0, 0, 0])
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    body = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def truncated(data: bytes, keep: float = 0.55) -> bytes:
    """The first part of an encoded image: its header still parses, decoding fails."""
    return data[: int(len(data) * keep)]


@dataclass
class Corpus:
    """Build context: where files go, how locations are spelled, seeded randomness, ground truth."""

    root: Path  # the folder being written (renamed to out_dir when the build succeeds)
    prefix: str  # location prefix relative to the data root, e.g. "samples"
    seed: int
    scale: int
    files: dict[str, bytes] = field(default_factory=dict)
    contamination: list[dict[str, Any]] = field(default_factory=list)
    near_duplicates: list[dict[str, Any]] = field(default_factory=list)
    broken: list[dict[str, Any]] = field(default_factory=list)
    downscale: list[dict[str, Any]] = field(default_factory=list)
    dropped_turns: list[dict[str, Any]] = field(default_factory=list)
    subsets: dict[str, dict[str, Any]] = field(default_factory=dict)
    benchmarks: dict[str, dict[str, Any]] = field(default_factory=dict)

    def rng(self, name: str) -> np.random.Generator:
        """A generator per named stream, so one subset's size never shifts another's content."""
        return np.random.default_rng([self.seed, zlib.crc32(name.encode())])

    def loc(self, relative: str) -> str:
        """A path inside the corpus as a source location (relative to the data root)."""
        return f"{self.prefix}/{relative}"

    def write(self, relative: str, data: bytes) -> str:
        if relative in self.files:
            raise ValueError(f"{relative} written twice")
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.files[relative] = data
        return self.loc(relative)

    def write_jsonl(self, relative: str, lines: list[str]) -> str:
        return self.write(relative, "".join(f"{line}\n" for line in lines).encode())

    def write_tar(self, relative: str, members: list[tuple[str, bytes]]) -> str:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(data), TAR_MTIME, 0o644
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                tar.addfile(info, io.BytesIO(data))
        return self.write(relative, buffer.getvalue())

    def write_parquet(self, relative: str, table: pa.Table) -> str:
        buffer = io.BytesIO()
        pq.write_table(table, buffer, row_group_size=PARQUET_ROW_GROUP, compression="zstd")
        return self.write(relative, buffer.getvalue())

    def record(self, spec: dict[str, Any], folder: str, **counts: Any) -> None:
        """Per-subset summary: spec name, format, category, the files under `folder`, counts."""
        files = sorted(p for p in self.files if p.startswith(f"{folder}/"))
        data_files = [self.loc(p) for p in files if not p.lower().endswith(IMAGE_EXTENSIONS)]
        target = self.benchmarks if spec.get("benchmark") else self.subsets
        target[spec["subset"]] = {
            "source": spec["name"],
            "format": spec["format"],
            "category": spec["category"],
            "location": spec["location"],
            "data_files": data_files,
            "files": len(files),
            **counts,
        }


def ref(
    corpus: Corpus,
    subset: str,
    file: str,
    *,
    row: int | None = None,
    member: str | None = None,
    key: str | None = None,
    image: str | None = None,
    image_bytes: bytes | None = None,
    image_member: str | None = None,
) -> dict[str, Any]:
    """Where a record lives, in the terms of `source_ref` (file, member, row) plus its key and image.

    `file` and `image` are locations relative to the data root; `row` is 0-based within the file
    (JSONL line, JSON array index, CSV data row, parquet row, WebDataset key within its shard);
    `member` is a WebDataset record's key, `image_member` its image's tar member name;
    `image_sha256` is the `image_id` ingestion computes from the stored bytes.
    """
    out: dict[str, Any] = {"subset": subset, "file": corpus.loc(file), "row": row, "member": member, "key": key}
    if image_member is not None:
        out["image_member"] = image_member
    if image is not None:
        out["image"] = corpus.loc(image)
    if image_bytes is not None:
        out["image_sha256"] = sha256(image_bytes)
    return out


def json_line(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False)


def insert_at_random(rng: np.random.Generator, items: list[Any], extra: list[Any]) -> list[Any]:
    """`items` with `extra` inserted at seeded random positions (their relative order kept)."""
    out = list(items)
    positions = sorted(rng.integers(0, len(items) + 1, size=len(extra)).tolist())
    for offset, (position, item) in enumerate(zip(positions, extra, strict=False)):
        out.insert(position + offset, item)
    return out
