"""The files executors open, prepared once into one folder: `finevision assets prepare --out DIR`.

On a laptop the tokenizer and the judge are converted from packaged GGUF files into driver-local
caches, which executors on other machines cannot read. A cluster prepares them once into a folder
every node reads (a local folder, a Databricks volume under /Volumes, an s3:// or abfss:// URI)
and sets `assets.dir` to it; clean, embed and rate then take their files from there:

    <dir>/manifest.json               what is here: {"assets": {kind: relative path}, "files": [...]}
    <dir>/tokenizer/tokenizer.json    clean's SmolLM2 tokenizer
    <dir>/judges/<name>/              each selected transformers judge, a checkpoint folder (one converted
                                      from a GGUF is also listed as `gguf:<package>/<file>`: training's
                                      `model.init: smollm2` starts from it)
    <dir>/prompts/judge/<axis>.md     the judge prompts (their hashes name the ratings)
    <dir>/sscd/<file>                 embed's TorchScript SSCD model, when embed.model_path is set

`manifest.json` lists every file with its size and sha256, so a copy can be checked.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

from etl.config import CONF_DIR, ConfigError, JudgeConfig, PipelineConfig, _absolute
from udfs.staging import is_uri, local_path

MANIFEST = "manifest.json"
TOKENIZER = "tokenizer"
PROMPTS = "prompts"
SSCD = "sscd"


def judge_key(name: str) -> str:
    return f"judge:{name}"


def gguf_key(package: str, filename: str) -> str:
    """The manifest key of the transformers checkpoint converted from a packaged GGUF file."""
    return f"gguf:{package}/{filename}"


def prepare(config: PipelineConfig, out: str) -> dict[str, Any]:
    """Write the executors' files for `config` into `out` (a folder or a URI); return the manifest."""
    from udfs.judge import load_prompts
    from udfs.judge_local import prepare_gguf_model
    from udfs.tokens import prepare_tokenizer

    with tempfile.TemporaryDirectory(prefix="finevision-assets-") as scratch:
        root = Path(scratch) if is_uri(out) else Path(out)
        root.mkdir(parents=True, exist_ok=True)
        assets: dict[str, str] = {}

        tok = config.clean.tokenizer
        tokenizer = prepare_tokenizer(tok.path, tok.gguf_package, tok.gguf_file, str(_absolute(tok.cache_dir)))
        assets[TOKENIZER] = _copy(Path(tokenizer), root, "tokenizer/tokenizer.json")

        settings = config.rate
        prompts_dir = (
            CONF_DIR / "prompts" / "judge" if settings.prompts_dir is None else _absolute(settings.prompts_dir)
        )
        for axis in load_prompts(prompts_dir, settings.axes):
            _copy(prompts_dir / f"{axis}.md", root, f"prompts/judge/{axis}.md")
        assets[PROMPTS] = "prompts/judge"

        for name in _selected_judges(config):
            judge = settings.judges[name]
            if judge.backend != "transformers":
                continue  # an endpoint: nothing to ship
            folder = judge.model_path or prepare_gguf_model(
                str(judge.gguf_package), str(judge.gguf_file), str(_absolute(str(judge.cache_dir)))
            )
            assets[judge_key(name)] = _copy(Path(local_path(folder)), root, f"judges/{name}")
            if not judge.model_path:  # also the checkpoint of its GGUF: training's `model.init: smollm2` starts from it
                assets[gguf_key(str(judge.gguf_package), str(judge.gguf_file))] = assets[judge_key(name)]

        if config.embed.model_path:
            model = Path(local_path(config.embed.model_path))
            assets[SSCD] = _copy(model, root, f"sscd/{model.name}")

        _readable_by_all(root)
        manifest = {"assets": assets, "files": _file_list(root)}
        (root / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        if is_uri(out):
            from pyarrow import fs as pafs

            filesystem, remote = pafs.FileSystem.from_uri(out)
            filesystem.create_dir(remote, recursive=True)
            pafs.copy_files(
                str(root), remote, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=filesystem
            )
    return manifest


def _selected_judges(config: PipelineConfig) -> list[str]:
    names = [config.rate.text_judge, config.rate.image_judge]
    return sorted({n for n in names if n is not None})


def _copy(source: Path, root: Path, relative: str) -> str:
    target = root / relative
    if source.resolve() == target.resolve():
        return relative
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target)
    else:
        shutil.copyfile(source, target)
    return relative


def _readable_by_all(root: Path) -> None:
    """Executors run as other users than the one preparing; a converted checkpoint can hold 0600
    files (written through temporary files), which a copy would keep."""
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)


def _file_list(root: Path) -> list[dict[str, Any]]:
    files = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST):
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        files.append({"path": str(path.relative_to(root)), "bytes": path.stat().st_size, "sha256": digest.hexdigest()})
    return files


@lru_cache(maxsize=8)
def _manifest(assets_dir: str) -> dict[str, Any]:
    path = f"{assets_dir.rstrip('/')}/{MANIFEST}"
    try:
        if is_uri(path):
            from pyarrow import fs as pafs

            filesystem, remote = pafs.FileSystem.from_uri(path)
            with filesystem.open_input_stream(remote) as stream:
                return json.loads(stream.read())
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"assets.dir {assets_dir}: no {MANIFEST}; run `finevision assets prepare --out {assets_dir}`"
        ) from None


def asset(config: PipelineConfig, kind: str, what: str) -> str | None:
    """The storage path of one prepared asset, None when `assets.dir` is not set; a ConfigError
    naming `finevision assets prepare` when the folder lacks it."""
    assets_dir = config.assets.dir
    if assets_dir is None:
        return None
    relative = _manifest(assets_dir)["assets"].get(kind)
    if relative is None:
        raise ConfigError(
            f"assets.dir {assets_dir} has no {what}; run `finevision assets prepare --out {assets_dir}` "
            "with this configuration"
        )
    return f"{assets_dir.rstrip('/')}/{relative}"


def gguf_checkpoint(config: PipelineConfig, package: str, filename: str) -> str | None:
    """The prepared checkpoint of a packaged GGUF (a judge's conversion), None when `assets.dir` is not set."""
    return asset(config, gguf_key(package, filename), f"checkpoint converted from {package}/{filename}")


def tokenizer_json(config: PipelineConfig) -> str | None:
    return asset(config, TOKENIZER, "tokenizer")


def prompts_dir(config: PipelineConfig) -> Path | None:
    """The judge prompts folder, local to the driver (the prompts travel to executors as text)."""
    folder = asset(config, PROMPTS, "judge prompts")
    return None if folder is None else Path(local_path(folder))


def judge_config(config: PipelineConfig, name: str) -> JudgeConfig:
    """Judge `name` with model_path pointing at its prepared checkpoint, where it has one."""
    judge = config.rate.judges[name]
    if judge.backend != "transformers":
        return judge
    path = asset(config, judge_key(name), f"checkpoint of judge {name}")
    return judge if path is None else judge.model_copy(update={"model_path": path})


def sscd_model_path(config: PipelineConfig) -> str | None:
    """embed.model_path as prepared in the assets folder (None: as configured)."""
    if config.embed.model_path is None:
        return None
    return asset(config, SSCD, f"SSCD model {config.embed.model_path}") or config.embed.model_path
