"""SSCD embedding batch functions: the int8 ONNX model on real photographs, and the TorchScript
backend with a small scripted model of SSCD's shape (conv trunk, GeM pooling, 512-d, L2 norm)."""

from __future__ import annotations

import io
import sys
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from udfs import decode, devices, sscd

skimage_data = pytest.importorskip("skimage.data")

# Distinct photographs shipped inside scikit-image (`cat()` is chelsea again, so it is not used).
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry")
ONNX_SPEC = sscd.EmbedderSpec(backend="onnx", device="cpu", micro_batch=8, intra_op_threads=2)


def encode(array: np.ndarray, fmt: str = "PNG", **save_args) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **save_args)
    return buffer.getvalue()


def resized_jpeg_copy(array: np.ndarray) -> bytes:
    """A copy as it might appear elsewhere: downscaled to 75% (aspect kept), saved as JPEG with
    PIL's default quality (75). Harsher copies score lower: at 60% and quality 70 `rocket` falls
    to about 0.81 with this int8 model at 320."""
    image = Image.fromarray(array).convert("RGB")
    image = image.resize((int(image.width * 0.75), int(image.height * 0.75)), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=75)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    return {name: getattr(skimage_data, name)() for name in PHOTOS}


@pytest.fixture(scope="module")
def onnx_embeddings(photos) -> dict[str, np.ndarray]:
    """Originals, copies, and a batch with corrupt entries between good ones, embedded once."""
    originals = [encode(photos[name]) for name in PHOTOS]
    copies = [resized_jpeg_copy(photos[name]) for name in PHOTOS]
    truncated = originals[0][: len(originals[0]) // 3]
    mixed = [originals[1], b"definitely not an image", originals[2], truncated, None, b"", originals[3]]
    return {
        "originals": sscd.embed_bytes(ONNX_SPEC, originals),
        "copies": sscd.embed_bytes(ONNX_SPEC, copies),
        "mixed": sscd.embed_bytes(ONNX_SPEC, mixed),
    }


def test_onnx_model_takes_uint8_nhwc_at_320():
    embedder = sscd.get_embedder(ONNX_SPEC)
    (model_input,) = embedder.session.get_inputs()
    assert model_input.type == "tensor(uint8)"
    assert model_input.shape[3] == 3
    out = embedder.embed(np.zeros((1, 320, 320, 3), np.uint8))
    assert out.shape == (1, 512)


def test_onnx_outputs_are_512d_unit_float32(onnx_embeddings):
    for key in ("originals", "copies"):
        vectors = onnx_embeddings[key]
        assert vectors.dtype == np.float32
        assert vectors.shape == (len(PHOTOS), 512)
        np.testing.assert_allclose(np.linalg.norm(vectors.astype(np.float64), axis=1), 1.0, atol=1e-4)


def test_resized_jpeg_copy_scores_at_least_0_9_with_its_original(onnx_embeddings):
    originals, copies = onnx_embeddings["originals"].astype(np.float64), onnx_embeddings["copies"].astype(np.float64)
    cosine = np.einsum("ij,ij->i", originals, copies)
    assert cosine.min() >= 0.9, dict(zip(PHOTOS, cosine.round(3), strict=False))


def test_unrelated_photographs_score_below_0_5(onnx_embeddings):
    originals = onnx_embeddings["originals"].astype(np.float64)
    copies = onnx_embeddings["copies"].astype(np.float64)
    off_diagonal = ~np.eye(len(PHOTOS), dtype=bool)
    assert (originals @ originals.T)[off_diagonal].max() < 0.5
    # A copy is still closer to its own original than to any other photograph.
    cross = copies @ originals.T
    assert cross[off_diagonal].max() < 0.5
    assert (cross.argmax(axis=1) == np.arange(len(PHOTOS))).all()


def test_corrupt_entries_give_nan_rows_and_leave_the_others_intact(onnx_embeddings):
    mixed, originals = onnx_embeddings["mixed"], onnx_embeddings["originals"]
    assert mixed.shape == (7, 512)
    bad = [1, 3, 4, 5]
    assert np.isnan(mixed[bad]).all()
    good = [0, 2, 6]
    assert np.isfinite(mixed[good]).all()
    # Good rows equal the same images embedded in another batch (row order kept).
    np.testing.assert_allclose(mixed[good], originals[[1, 2, 3]], atol=1e-5)


def test_decode_and_resize_handles_modes_and_failures(photos):
    gray = encode(skimage_data.camera())
    rgba = encode(np.dstack([photos["coffee"], np.full(photos["coffee"].shape[:2], 128, np.uint8)]))
    palette = io.BytesIO()
    Image.fromarray(photos["rocket"]).convert("P").save(palette, format="PNG", transparency=0)
    blobs = [gray, b"\x89PNG\r\n\x1a\n broken", rgba, palette.getvalue(), encode(photos["chelsea"], "JPEG")]
    decoded = decode.decode_and_resize(blobs, 320)
    assert decoded.pixels.shape == (5, 320, 320, 3) and decoded.pixels.dtype == np.uint8
    assert decoded.failed.tolist() == [False, True, False, False, False]
    assert decoded.failed_indices == [1]
    assert not decoded.pixels[1].any()
    # Grayscale becomes three equal channels; the aspect ratio is ignored (451x300 -> 320x320).
    assert (decoded.pixels[0, ..., 0] == decoded.pixels[0, ..., 2]).all()
    expected = np.asarray(Image.fromarray(photos["coffee"]).resize((320, 320), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(decoded.pixels[2], expected)
    threaded = decode.decode_and_resize(blobs, 320, workers=3)
    np.testing.assert_array_equal(threaded.pixels, decoded.pixels)


def test_oversized_canvas_fails_without_decoding(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # as another module might set it
    big = encode(np.zeros((2000, 2000), np.uint8))
    monkeypatch.setattr(decode, "MAX_DECODE_PIXELS", 1_000_000)
    assert decode.decode_and_resize([big], 64).failed.tolist() == [True]


def test_model_id_names_model_backend_and_size():
    assert sscd.model_id(sscd.EmbedderSpec()) == "sscd_disc_mixup-int8-onnx@320"
    assert sscd.model_id(sscd.EmbedderSpec(image_size=288)) == "sscd_disc_mixup-int8-onnx@288"
    torchscript = sscd.EmbedderSpec(backend="torchscript", model_path="s3://models/sscd_disc_mixup.torchscript.pt")
    assert sscd.model_id(torchscript) == "sscd_disc_mixup-torchscript@320"
    with pytest.raises(ValueError):
        sscd.EmbedderSpec(backend="torchscript")
    with pytest.raises(ValueError):
        sscd.EmbedderSpec(device="gpu")


def test_pick_device_outside_spark():
    assert devices.pick_device("cpu", cuda_available=True) == "cpu"
    assert devices.pick_device("auto", cuda_available=False) == "cpu"
    assert devices.pick_device("auto", cuda_available=True) == "cuda:0"
    assert devices.pick_device("cuda:3", cuda_available=True, device_count=1) == "cuda:0"
    with pytest.raises(RuntimeError):
        devices.pick_device("cuda", cuda_available=False)


def test_pick_device_uses_the_spark_task_gpu(monkeypatch):
    class FakeTaskContext:
        @staticmethod
        def get():
            return SimpleNamespace(resources=lambda: {"gpu": SimpleNamespace(name="gpu", addresses=["2"])})

    monkeypatch.setitem(sys.modules, "pyspark", SimpleNamespace(TaskContext=FakeTaskContext))
    assert devices.task_gpu_address() == 2
    assert devices.pick_device("auto", cuda_available=True, device_count=4) == "cuda:2"
    assert devices.pick_device("auto", cuda_available=False) == "cpu"


def test_embedder_is_loaded_once_per_worker():
    assert sscd.get_embedder(ONNX_SPEC) is sscd.get_embedder(ONNX_SPEC)


# ---------------------------------------------------------------------------------------------
# TorchScript backend


class GeM(torch.nn.Module):
    def __init__(self, p: float = 3.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(min=1e-6).pow(self.p).mean(dim=(2, 3)).pow(1.0 / self.p)


class TinySSCD(torch.nn.Module):
    """SSCD's shape in miniature: conv trunk, GeM pooling, linear to 512, L2 normalisation."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = torch.nn.Sequential(
            torch.nn.Conv2d(3, 16, 5, stride=4, padding=2),
            torch.nn.BatchNorm2d(16),
            torch.nn.ReLU(),
            torch.nn.Conv2d(16, 32, 3, stride=2, padding=1),
            torch.nn.ReLU(),
        )
        self.pool = GeM()
        self.project = torch.nn.Linear(32, 512)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(self.project(self.pool(self.trunk(x))), dim=1)


@pytest.fixture(scope="module")
def tiny_model_path(tmp_path_factory):
    torch.manual_seed(0)
    model = TinySSCD().eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        model.trunk[1].running_mean.uniform_(-0.5, 0.5)
        model.trunk[1].running_var.uniform_(0.5, 2.0)
    path = tmp_path_factory.mktemp("models") / "tiny_sscd.torchscript.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script's deprecation notice
        torch.jit.save(torch.jit.script(model), str(path))
    return path, model


def test_torchscript_matches_eager_model_on_numpy_preprocessing(tiny_model_path, photos):
    path, eager = tiny_model_path
    spec = sscd.EmbedderSpec(backend="torchscript", model_path=str(path), image_size=96, micro_batch=2, device="cpu")
    blobs = [encode(photos[name]) for name in PHOTOS[:3]] + [b"corrupt"]
    out = sscd.embed_bytes(spec, blobs)
    assert out.dtype == np.float32 and out.shape == (4, 512)
    assert np.isnan(out[3]).all()
    np.testing.assert_allclose(np.linalg.norm(out[:3].astype(np.float64), axis=1), 1.0, atol=1e-5)

    # Independent reference: PIL decode + resize, ImageNet normalisation written out in numpy,
    # the eager (unscripted) module on that NCHW tensor.
    pixels = np.stack(
        [
            np.asarray(Image.open(io.BytesIO(b)).convert("RGB").resize((96, 96), Image.Resampling.BILINEAR))
            for b in blobs[:3]
        ]
    )
    x = (pixels.astype(np.float32) / 255.0 - np.array([0.485, 0.456, 0.406], np.float32)) / np.array(
        [0.229, 0.224, 0.225], np.float32
    )
    with torch.no_grad():
        expected = eager(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))).numpy()
    np.testing.assert_allclose(out[:3], expected, atol=1e-5)
    assert sscd.get_embedder(spec).device == "cpu"


# ---------------------------------------------------------------------------------------------
# Decoding on the model's device (nvJPEG on a GPU; torchvision's libjpeg path here on CPU)


def test_device_decode_agrees_with_pil_decode_under_real_sscd(photos):
    from udfs.gpu_decode import decode_and_resize_on_device

    jpegs = [encode(photos[name], "JPEG", quality=90) for name in PHOTOS]
    pngs = [encode(photos[name]) for name in PHOTOS[:2]]
    blobs = jpegs + pngs + [b"\xff\xd8\xff not a jpeg", None, jpegs[0][: len(jpegs[0]) // 3]]
    device_pixels, failed = decode_and_resize_on_device(blobs, 320, "cpu")
    reference = decode.decode_and_resize(blobs, 320)

    # Broken entries fail on both paths; PNGs take the same PIL path (identical pixels).
    assert failed.tolist() == reference.failed.tolist() == [False] * 8 + [True, True, True]
    assert device_pixels.dtype == torch.uint8 and tuple(device_pixels.shape) == (11, 320, 320, 3)
    np.testing.assert_array_equal(device_pixels[6:8].numpy(), reference.pixels[6:8])
    assert not device_pixels[8:].any()
    # JPEGs: another IDCT and resampler, a few grey levels apart on average...
    difference = np.abs(device_pixels[:6].numpy().astype(int) - reference.pixels[:6].astype(int))
    assert difference.mean() < 3.0
    # ...and the same images under the real SSCD model (cosine, unit rows).
    embedder = sscd.get_embedder(ONNX_SPEC)
    cosine = (embedder.embed(device_pixels[:6].numpy()) * embedder.embed(reference.pixels[:6])).sum(axis=1)
    assert cosine.min() > 0.98, cosine


def test_device_decode_refuses_oversized_jpeg_headers(monkeypatch):
    from udfs import gpu_decode

    jpeg = encode(np.zeros((64, 64, 3), np.uint8), "JPEG")
    assert gpu_decode.is_decodable_jpeg(jpeg)
    monkeypatch.setattr(decode, "MAX_DECODE_PIXELS", 64 * 64 - 1)
    assert not gpu_decode.is_decodable_jpeg(jpeg)


def test_torchscript_decode_on_device_embeds_like_the_pil_path(tiny_model_path, photos):
    path, _ = tiny_model_path
    common = dict(backend="torchscript", model_path=str(path), image_size=96, micro_batch=3, device="cpu")
    blobs = [encode(photos[name], "JPEG", quality=90) for name in PHOTOS] + [b"corrupt", encode(photos["coffee"])]
    on_device = sscd.embed_bytes(sscd.EmbedderSpec(**common, decode_on_device=True), blobs)
    with_pil = sscd.embed_bytes(sscd.EmbedderSpec(**common), blobs)
    assert np.isnan(on_device[6]).all() and np.isnan(with_pil[6]).all()
    keep = [0, 1, 2, 3, 4, 5, 7]
    assert (on_device[keep] * with_pil[keep]).sum(axis=1).min() > 0.99
    with pytest.raises(ValueError, match="torchscript"):
        sscd.EmbedderSpec(backend="onnx", decode_on_device=True)
