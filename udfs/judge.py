"""LLM/VLM judges for turn-level quality ratings: prompts, score extraction and two backends.

Plain Python in, plain Python out (no Spark), so tests and `bench/judge_throughput.py` call it
directly and the rate stage's `mapInPandas` wraps it:

    spec = JudgeSpec(backend="transformers", judge_model="SmolLM2-135M-Instruct-Q4_1", model_path=folder)
    verdicts = get_backend(spec).rate([JudgeRequest(prompt), ...])   # udfs/judge_backends.py
    # -> [Verdict(score, expected_score, error)]

- Prompts live in `conf/prompts/judge/<axis>.md`, with `{question}` and `{answer}` placeholders;
  a prompt is identified by the hash of its text, so editing it makes a new rating.
- A score is one number 1-5 in the judge's output (`parse_score`); anything else is a null score
  with the reason. When the backend exposes token probabilities, `expected_score` is the
  probability-weighted mean over the five digits at the position where the score was written.
- `OpenAIChatBackend`: any chat-completions endpoint (vLLM, Databricks Model Serving, ...), bounded
  concurrency, timeouts, retries with backoff on 429/5xx/timeouts; images go as data URLs.
- `TransformersBackend` (`udfs/judge_local.py`, with the GGUF conversion): a local causal LM on
  the task's device, batched greedy generation.
`udfs/judge_backends.py` chooses the backend for a spec and caches it once per Python worker
(`get_backend`); this module imports neither it nor `udfs/judge_local.py`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import random
import re
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from etl.schema import RATING_AXES

IMAGE_AXES = frozenset({"image_correspondence"})
ANSWER_AXES = frozenset({"formatting", "relevance"})  # the others see the question only
DIGITS = ("1", "2", "3", "4", "5")

NO_JUDGE_MODEL = "none"
NO_VLM_JUDGE = "no VLM judge configured"
NO_IMAGE = "sample has no image"
REQUEST_FAILED = "request failed: "
"""Prefix of errors that a later run retries (timeouts, 429, 5xx, connection errors). Every other
error (unparsable output, no judge, no image, a rejected request) is final for that judge+prompt."""

_PLACEHOLDER = re.compile(r"\{(question|answer)\}")
_THINK = re.compile(r"<think>.*?(</think>|$)", re.DOTALL)
_OUT_OF_FIVE = re.compile(r"\s*(?:/|out of)\s*5\b", re.IGNORECASE)
_NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?![\w])")


# ---------------------------------------------------------------------------------------------
# Prompts


def prompt_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class JudgePrompt:
    axis: str
    template: str

    @property
    def prompt_hash(self) -> str:
        return prompt_hash(self.template)

    def render(self, question: str, answer: str = "", max_chars: int | None = None) -> str:
        """The template with the turn filled in, in one pass (a `{answer}` inside the question stays text)."""
        values = {"question": question or "", "answer": answer or ""}
        if max_chars is not None:
            values = {k: _clip(v, max_chars) for k, v in values.items()}
        return _PLACEHOLDER.sub(lambda m: values[m.group(1)], self.template)


def _clip(text: str, max_chars: int) -> str:
    return text if len(text) <= max_chars else text[:max_chars] + " [...]"


def load_prompts(directory: str | Path, axes: Sequence[str] = RATING_AXES) -> dict[str, JudgePrompt]:
    """`<axis>.md` for every axis; fails naming the file that is missing or lacks a placeholder."""
    prompts: dict[str, JudgePrompt] = {}
    for axis in axes:
        if axis not in RATING_AXES:
            raise ValueError(f"unknown axis {axis!r}; axes are {list(RATING_AXES)}")
        path = Path(directory) / f"{axis}.md"
        if not path.exists():
            raise FileNotFoundError(f"judge prompt for axis {axis} not found: {path}")
        template = path.read_text(encoding="utf-8")
        needed = {"question", "answer"} if axis in ANSWER_AXES else {"question"}
        missing = needed - set(_PLACEHOLDER.findall(template))
        if missing:
            raise ValueError(
                f"{path}: the {axis} prompt needs the placeholders {sorted('{' + m + '}' for m in missing)}"
            )
        prompts[axis] = JudgePrompt(axis, template)
    return prompts


# ---------------------------------------------------------------------------------------------
# Requests, verdicts and score extraction


@dataclass(frozen=True)
class JudgeRequest:
    prompt: str
    images: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class Verdict:
    score: int | None
    expected_score: float | None = None
    error: str | None = None


def parse_score(text: str | None) -> tuple[int | None, str | None]:
    """(score, None) when the output holds exactly one number and it is 1-5, else (None, reason).

    Accepted: `4`, `**4**`, `Score: 4`, `4/5`, `The answer is 4.`, `4\\nbecause ...`. Rejected (never
    guessed): no number, a number outside 1-5, or several different numbers (`3 or 4`).
    A reasoning model's `<think>` block is ignored.
    """
    if text is None:
        return None, "unparsable judge output: empty"
    visible = _OUT_OF_FIVE.sub("", _THINK.sub("", text))
    numbers = set(_NUMBER.findall(visible))
    if len(numbers) == 1:
        (number,) = numbers
        if number in DIGITS:
            return int(number), None
        return None, f"unparsable judge output: {number} is not a score from 1 to 5 in {_quote(text)}"
    what = "no score" if not numbers else "several numbers"
    return None, f"unparsable judge output: {what} in {_quote(text)}"


def _quote(text: str, limit: int = 200) -> str:
    return json.dumps(text if len(text) <= limit else text[:limit] + "...", ensure_ascii=False)


def digit_expectation(digit_probs: Mapping[str, float]) -> float | None:
    """Probability-weighted mean of 1..5, normalised over the five digits' probability mass."""
    mass = {d: p for d, p in digit_probs.items() if d in DIGITS and p > 0}
    total = sum(mass.values())
    if total <= 0:
        return None
    return sum(int(d) * p for d, p in mass.items()) / total


def is_retryable(error: str | None) -> bool:
    return error is not None and error.startswith(REQUEST_FAILED)


# ---------------------------------------------------------------------------------------------
# Backends


class JudgeBackend(Protocol):
    def rate(self, requests: Sequence[JudgeRequest]) -> list[Verdict]:
        """One verdict per request, in order; never raises for one bad request."""


@dataclass(frozen=True)
class JudgeSpec:
    """A judge: which backend and model, and how to call it. Hashable: the per-worker cache key.

    judge_model is what `turn_ratings.judge_model` records (the served model name by default).
    """

    backend: Literal["openai", "transformers"]
    judge_model: str
    vision: bool = False
    # openai: chat-completions endpoint
    base_url: str | None = None
    model: str | None = None  # the name the endpoint serves; defaults to judge_model
    api_key_env: str | None = None  # read on the executor, never stored in config
    max_concurrency: int = 16
    timeout_s: float = 60.0
    max_retries: int = 4
    backoff_s: float = 1.0
    max_tokens: int = 16
    logprobs: bool = True
    extra_body: str = "{}"  # JSON merged into every request (e.g. chat_template_kwargs)
    # transformers: local model
    model_path: str | None = None
    batch_size: int = 16
    max_new_tokens: int = 8
    max_prompt_tokens: int = 4096
    device: str = "auto"
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.backend == "openai" and not self.base_url:
            raise ValueError(f"judge {self.judge_model}: backend openai needs base_url")
        if self.backend == "transformers" and not self.model_path:
            raise ValueError(f"judge {self.judge_model}: backend transformers needs model_path")
        if self.backend not in ("openai", "transformers"):
            raise ValueError(f"judge {self.judge_model}: unknown backend {self.backend!r}")


class OpenAIChatBackend:
    """POST {base_url}/chat/completions, up to `max_concurrency` requests in flight per worker."""

    RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})

    def __init__(self, spec: JudgeSpec):
        import httpx

        if not spec.base_url:
            raise ValueError(f"judge {spec.judge_model}: the endpoint backend needs base_url")
        self.spec = spec
        self.url = spec.base_url.rstrip("/") + "/chat/completions"
        headers = {"Content-Type": "application/json"}
        if spec.api_key_env:
            key = os.environ.get(spec.api_key_env)
            if not key:
                raise RuntimeError(
                    f"judge {spec.judge_model}: environment variable {spec.api_key_env} is not set on this worker"
                )
            headers["Authorization"] = f"Bearer {key}"
        self.extra = json.loads(spec.extra_body)
        limits = httpx.Limits(max_connections=spec.max_concurrency, max_keepalive_connections=spec.max_concurrency)
        self.client = httpx.Client(headers=headers, timeout=httpx.Timeout(spec.timeout_s), limits=limits)
        self.pool = ThreadPoolExecutor(max_workers=spec.max_concurrency, thread_name_prefix="judge-http")
        self._lock = threading.Lock()
        self.requests_sent = 0

    def rate(self, requests: Sequence[JudgeRequest]) -> list[Verdict]:
        return list(self.pool.map(self._rate_one, requests))

    def payload(self, request: JudgeRequest) -> dict:
        content: str | list[dict] = request.prompt
        if request.images:
            parts = [{"type": "image_url", "image_url": {"url": image_data_url(b)}} for b in request.images]
            content = [*parts, {"type": "text", "text": request.prompt}]
        body = {
            "model": self.spec.model or self.spec.judge_model,
            "messages": [{"role": "user", "content": content}],
            "max_tokens": self.spec.max_tokens,
            "temperature": 0,
        }
        if self.spec.logprobs:
            body |= {"logprobs": True, "top_logprobs": 5}
        return body | self.extra

    def _rate_one(self, request: JudgeRequest) -> Verdict:
        import httpx

        if request.images and not self.spec.vision:
            return Verdict(None, None, f"judge {self.spec.judge_model} is not a vision model")
        body, attempts, last, retry_after = self.payload(request), self.spec.max_retries + 1, "", None
        for attempt in range(attempts):
            if attempt:
                time.sleep(self._backoff(attempt, retry_after))
                retry_after = None
            with self._lock:
                self.requests_sent += 1
            try:
                response = self.client.post(self.url, json=body)
            except httpx.TimeoutException:
                last = f"timeout after {self.spec.timeout_s:g}s"
                continue
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
                continue
            if response.status_code in self.RETRY_STATUS:
                last = f"HTTP {response.status_code}: {response.text[:200]}"
                if response.status_code == 429:
                    retry_after = response.headers.get("retry-after")
                continue
            if response.status_code != 200:
                return Verdict(None, None, f"rejected: HTTP {response.status_code}: {response.text[:300]}")
            return self._verdict(response)
        return Verdict(None, None, f"{REQUEST_FAILED}{last} ({attempts} attempts)")

    def _backoff(self, attempt: int, retry_after: str | None) -> float:
        delay = self.spec.backoff_s * 2 ** (attempt - 1)
        if retry_after and retry_after.replace(".", "", 1).isdigit():  # a 429's Retry-After seconds, capped
            delay = max(delay, min(float(retry_after), 60.0))
        return delay * (1 + 0.25 * random.random())  # jitter: retries from many tasks spread out

    def _verdict(self, response) -> Verdict:
        try:
            choice = response.json()["choices"][0]
            text = choice["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            return Verdict(None, None, f"rejected: not a chat completion: {_quote(response.text)}")
        score, error = parse_score(text)
        if score is None:
            return Verdict(None, None, error)
        return Verdict(score, openai_expectation((choice.get("logprobs") or {}).get("content")), None)


def openai_expectation(content: list | None) -> float | None:
    """Expected score from chat-completions logprobs: the first generated token that is a digit
    1-5, and the digits among its top_logprobs (tokens that differ only by spaces add up)."""
    for position in content or []:
        if str(position.get("token", "")).strip() in DIGITS:
            probs: dict[str, float] = {}
            for alt in position.get("top_logprobs") or [position]:
                digit = str(alt.get("token", "")).strip()
                if digit in DIGITS:
                    probs[digit] = probs.get(digit, 0.0) + math.exp(alt["logprob"])
            return digit_expectation(probs)
    return None


def image_data_url(data: bytes) -> str:
    return f"data:{image_mime(data)};base64,{base64.b64encode(data).decode('ascii')}"


def image_mime(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    return "application/octet-stream"
