"""The judge backend for a `JudgeSpec`, built once per Python worker (the model loads once): the
one place that maps `JudgeSpec.backend` to `OpenAIChatBackend` (udfs/judge.py) or
`TransformersBackend` (udfs/judge_local.py). Both modules sit below it, so neither imports the
other's backend.

    verdicts = get_backend(spec).rate([JudgeRequest(prompt), ...])
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

from udfs.judge import JudgeBackend, JudgeSpec, OpenAIChatBackend
from udfs.judge_local import TransformersBackend

BACKENDS: dict[str, Callable[[JudgeSpec], JudgeBackend]] = {
    "openai": OpenAIChatBackend,
    "transformers": TransformersBackend,
}


@lru_cache(maxsize=8)
def get_backend(spec: JudgeSpec) -> JudgeBackend:
    """The backend for `spec`, built once per Python worker."""
    return BACKENDS[spec.backend](spec)
