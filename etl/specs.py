"""What jobs hand to the executors, built from the configuration alone: the clean rules, the
embedder spec and the judges per axis. Several jobs need each of them (the analytics count tokens
with the clean rules, dedup and decontaminate name the embedding model, the export and analytics
select the configured judges' ratings), so they live here rather than in one job. Importing this
module loads no model; `configured_judges` converts none either, `axis_judges` may (once, on the driver).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from etl import assets
from etl.config import CONF_DIR, ConfigError, JudgeConfig, PipelineConfig, _absolute
from etl.session import is_connect
from etl.stages.clean import CleanRules
from etl.stages.rate import AxisJudge
from udfs.images import ImageRules
from udfs.judge import IMAGE_AXES, NO_JUDGE_MODEL, JudgeSpec, load_prompts
from udfs.judge_local import prepare_gguf_model
from udfs.sscd import EmbedderSpec
from udfs.tokens import prepare_tokenizer


def rules_from(config: PipelineConfig) -> CleanRules:
    """The clean stage's rules; the tokenizer is the prepared asset, or converted here once from its package."""
    clean = config.clean
    tok = clean.tokenizer
    return CleanRules(
        images=ImageRules(clean.max_side, clean.max_pixels, clean.jpeg_quality),
        max_turn_tokens=clean.max_turn_tokens,
        tokenizer_json=assets.tokenizer_json(config)
        or prepare_tokenizer(tok.path, tok.gguf_package, tok.gguf_file, tok.cache_dir),
    )


def ship_to_executors(spark, path: str) -> str:
    """Ship the driver's file to every executor (`SparkContext.addFile`; over Spark Connect the
    session's file artifacts) under a name made from its content, and return the driver-side path
    of that name: executors that cannot read the path open the shipped copy by its name
    (`udfs.tokens.tokenizer_file`). Content-addressed names never collide, since Spark refuses a
    second file of the same name with other content."""
    source = Path(path)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    named = source.with_name(f"{source.stem}-{digest}{source.suffix}")
    if not named.exists():
        shutil.copyfile(source, named)
    if is_connect(spark):
        spark.addArtifacts(str(named), file=True)
    else:
        spark.sparkContext.addFile(str(named))
    return str(named)


def embedder_spec(config: PipelineConfig, threads: int = 1) -> EmbedderSpec:
    """What an embed worker loads: the SSCD model of `embed` (from the assets folder where prepared)."""
    settings = config.embed
    return EmbedderSpec(
        backend=settings.backend,
        model_path=assets.sscd_model_path(config),
        image_size=settings.image_size,
        micro_batch=settings.micro_batch,
        device=settings.device,
        decode_on_device=settings.decode_on_device,
        # one model thread per task slot, so concurrent tasks do not oversubscribe the cores
        intra_op_threads=threads,
    )


def judge_spec(config: JudgeConfig, task_cpus: int) -> JudgeSpec:
    """The executor-side description of a judge; a packaged GGUF is converted here, once."""
    model_path = config.model_path
    if config.backend == "transformers" and model_path is None:
        if not (config.gguf_package and config.gguf_file and config.cache_dir):
            raise ValueError(f"judge {config.model}: give model_path, or gguf_package, gguf_file and cache_dir")
        model_path = prepare_gguf_model(config.gguf_package, config.gguf_file, str(_absolute(config.cache_dir)))
    return JudgeSpec(
        backend=config.backend,
        judge_model=config.model,
        vision=config.vision,
        base_url=config.base_url,
        api_key_env=config.api_key_env,
        max_concurrency=config.max_concurrency,
        timeout_s=config.timeout_s,
        max_retries=config.max_retries,
        backoff_s=config.backoff_s,
        max_tokens=config.max_tokens,
        logprobs=config.logprobs,
        extra_body=json.dumps(config.extra_body, sort_keys=True),
        model_path=model_path,
        batch_size=config.batch_size,
        max_new_tokens=config.max_new_tokens,
        max_prompt_tokens=config.max_prompt_tokens,
        device=config.device,
        threads=task_cpus,  # one model thread per task slot: tasks do not oversubscribe
    )


def _prompts(config: PipelineConfig) -> dict:
    settings = config.rate
    try:
        folder = assets.prompts_dir(config) or (
            CONF_DIR / "prompts" / "judge" if settings.prompts_dir is None else _absolute(settings.prompts_dir)
        )
        return load_prompts(folder, settings.axes)
    except (FileNotFoundError, ValueError) as exc:
        raise ConfigError(f"rate.prompts_dir: {exc}") from None


def _judge_name(settings, axis: str) -> str | None:
    return settings.image_judge if axis in IMAGE_AXES else settings.text_judge


def axis_judges(config: PipelineConfig, task_cpus: int = 1) -> list[AxisJudge]:
    """Who rates each axis, ready for the executors (a packaged GGUF judge is converted here)."""
    settings = config.rate
    prompts = _prompts(config)
    specs: dict[str, JudgeSpec] = {}
    assignments = []
    for axis in settings.axes:
        name = _judge_name(settings, axis)
        if name is not None and name not in specs:
            specs[name] = judge_spec(assets.judge_config(config, name), task_cpus)
        assignments.append(AxisJudge(axis, prompts[axis], specs.get(name) if name else None))
    return assignments


def configured_judges(config: PipelineConfig) -> dict[str, tuple[str, str]]:
    """axis -> (judge_model, prompt_hash) of this configuration, what the export and analytics
    select; read from the configuration alone (no model is converted or loaded)."""
    settings = config.rate
    prompts = _prompts(config)
    judges: dict[str, tuple[str, str]] = {}
    for axis in settings.axes:
        name = _judge_name(settings, axis)
        judges[axis] = (settings.judges[name].model if name else NO_JUDGE_MODEL, prompts[axis].prompt_hash)
    return judges
