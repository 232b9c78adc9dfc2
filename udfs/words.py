"""Words as decontamination compares texts: the unit of the text n-grams (`etl.stages.text_decontam`)
and of the verifier's text overlap (`udfs.verify`). Spark-free, so executors' pair verification
imports no stage module."""

from __future__ import annotations

import re
import unicodedata

_NON_WORD = re.compile(r"[^\w]+")


def normalised_words(text: str | None) -> list[str]:
    """Lower-cased NFKC words, punctuation removed: the unit n-grams are made of."""
    if not text:
        return []
    return _NON_WORD.sub(" ", unicodedata.normalize("NFKC", text).lower()).split()
