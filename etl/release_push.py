"""`finevision release push`: the release folder to a Hub dataset repository.

    files = planned_files("lakehouse/release")                 # what would be uploaded
    push("lakehouse/release", "me/my-finevision", dry_run=False)

The upload is `huggingface_hub`'s large-folder upload (resumable: a re-run skips what is already
committed); staging folders of an interrupted export are never uploaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

IGNORE_PATTERNS = ["_staging-*/**", "**/.DS_Store"]


@dataclass(frozen=True)
class PlannedFile:
    path: str  # relative to the folder, as in the repository
    bytes: int


def planned_files(folder: str | Path) -> list[PlannedFile]:
    """Every file the push uploads; fails if the folder is not a release (no card listing configs, or
    a config without shards)."""
    root = Path(folder)
    if "://" in str(folder):
        raise ValueError(f"{folder}: push reads a local folder; copy the release from the object store first")
    card = root / "README.md"
    if not card.is_file():
        raise ValueError(f"{root} has no README.md: not a release folder (run `finevision export`)")
    meta = yaml.safe_load(card.read_text().split("---")[1]) if card.read_text().startswith("---") else None
    configs = (meta or {}).get("configs") or []
    if not configs:
        raise ValueError(f"{card}: the dataset card lists no configs")
    files = [
        PlannedFile(p.relative_to(root).as_posix(), p.stat().st_size)
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.relative_to(root).parts[0].startswith("_staging-") and p.name != ".DS_Store"
    ]
    for config in configs:
        for data_files in config["data_files"]:
            folder_name = data_files["path"].split("/", 1)[0]
            if not any(f.path.startswith(f"{folder_name}/") for f in files):
                raise ValueError(f"config {config['config_name']!r}: no shards under {root / folder_name}")
    return files


def push(
    folder: str | Path,
    repo_id: str,
    private: bool = False,
    revision: str | None = None,
    dry_run: bool = False,
    api=None,
) -> list[PlannedFile]:
    """Upload the release to the dataset repo `repo_id` (created if missing); with dry_run only
    return what would be uploaded, without touching the network."""
    files = planned_files(folder)
    if dry_run:
        return files
    from huggingface_hub import HfApi

    api = api or HfApi()
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    upload = {
        "repo_id": repo_id,
        "folder_path": str(folder),
        "repo_type": "dataset",
        "revision": revision,
        "ignore_patterns": IGNORE_PATTERNS,
    }
    if hasattr(api, "upload_large_folder"):  # huggingface_hub < 2: the resumable uploader has its own name
        api.upload_large_folder(**upload)
    else:  # huggingface_hub >= 2: upload_folder is resumable and commits large folders in parts (hf_xet)
        api.upload_folder(**upload, commit_message="FineVision ETL release")
    return files
