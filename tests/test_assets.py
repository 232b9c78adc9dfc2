"""`finevision assets prepare` and `assets.dir`: the files executors open come from one prepared folder."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from etl import assets
from etl.cli import app
from etl.config import ConfigError, load_config
from etl.specs import axis_judges, configured_judges, rules_from
from udfs.staging import local_path
from udfs.tokens import count_tokens, load_tokenizer, tokenizer_file

NO_JUDGE = ["rate.text_judge=null"]  # the tokenizer and prompts only: no checkpoint to copy


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("assets") / "assets"
    assets.prepare(load_config(overrides=NO_JUDGE), str(out))
    return out


def test_manifest_lists_every_file_with_its_size_and_hash(prepared):
    manifest = json.loads((prepared / "manifest.json").read_text())
    on_disk = sorted(str(p.relative_to(prepared)) for p in prepared.rglob("*") if p.is_file())
    assert sorted([f["path"] for f in manifest["files"]] + ["manifest.json"]) == on_disk
    for entry in manifest["files"]:
        path = prepared / entry["path"]
        assert entry["bytes"] == path.stat().st_size and entry["sha256"] == _sha256(path)
        assert path.stat().st_mode & 0o444 == 0o444  # executors run as other users
    assert manifest["assets"] == {"tokenizer": "tokenizer/tokenizer.json", "prompts": "prompts/judge"}
    assert {p.name for p in (prepared / "prompts" / "judge").iterdir()} == {
        "formatting.md",
        "relevance.md",
        "visual_dependency.md",
        "image_correspondence.md",
    }


def test_clean_takes_the_prepared_tokenizer(prepared):
    local = rules_from(load_config(overrides=NO_JUDGE)).tokenizer_json
    from_assets = rules_from(load_config(overrides=[*NO_JUDGE, f"assets.dir={prepared}"])).tokenizer_json
    assert from_assets == f"{prepared}/tokenizer/tokenizer.json" and from_assets != local
    texts = ["How many bars are above 40?", "Ünïcode, spaces   and 12345 digits"]
    assert count_tokens(load_tokenizer(from_assets), texts) == count_tokens(load_tokenizer(local), texts)


def test_rate_reads_the_prepared_prompts(prepared, tmp_path):
    import shutil

    copy = tmp_path / "assets"
    shutil.copytree(prepared, copy)
    (copy / "prompts" / "judge" / "formatting.md").write_text("Rate the formatting of {question} / {answer}: 1-5.")
    before = configured_judges(load_config(overrides=[*NO_JUDGE, f"assets.dir={prepared}"]))
    after = configured_judges(load_config(overrides=[*NO_JUDGE, f"assets.dir={copy}"]))
    assert after["formatting"] != before["formatting"] and after["relevance"] == before["relevance"]


def test_a_missing_asset_names_the_prepare_command(prepared, tmp_path):
    with pytest.raises(ConfigError, match=r"no manifest.json; run `finevision assets prepare --out "):
        rules_from(load_config(overrides=[f"assets.dir={tmp_path / 'empty'}"]))
    # prepared without a judge, run with the default one
    with pytest.raises(ConfigError, match=r"no checkpoint of judge smollm2_135m; run `finevision assets prepare"):
        axis_judges(load_config(overrides=[f"assets.dir={prepared}"]))


def test_judge_and_sscd_model_come_from_the_assets_folder(tmp_path):
    judge = tmp_path / "judge"  # a checkpoint folder given as model_path (its content is not loaded here)
    judge.mkdir()
    (judge / "config.json").write_text('{"model_type": "llama"}')
    (judge / "config.json").chmod(0o600)  # as a converted checkpoint can have them
    model = tmp_path / "sscd_disc_mixup.torchscript.pt"
    model.write_bytes(b"not loaded in this test")
    out = tmp_path / "assets"
    overrides = [
        f"rate.judges.smollm2_135m.model_path={judge}",
        "embed.backend=torchscript",
        f"embed.model_path={model}",
    ]
    manifest = assets.prepare(load_config(overrides=overrides), str(out))
    assert manifest["assets"]["judge:smollm2_135m"] == "judges/smollm2_135m"
    assert (out / "judges" / "smollm2_135m" / "config.json").read_text() == '{"model_type": "llama"}'
    assert (out / "judges" / "smollm2_135m" / "config.json").stat().st_mode & 0o444 == 0o444
    assert (out / "sscd" / model.name).read_bytes() == model.read_bytes()

    config = load_config(overrides=[*overrides, f"assets.dir={out}"])
    (assignment,) = {a.judge for a in axis_judges(config) if a.judge is not None}
    assert assignment.model_path == f"{out}/judges/smollm2_135m"
    assert assets.sscd_model_path(config) == f"{out}/sscd/{model.name}"
    assert assets.sscd_model_path(load_config(overrides=overrides)) == str(model)


def test_prepare_to_a_uri_and_executors_stage_a_local_copy(prepared, tmp_path):
    bucket = tmp_path / "bucket"
    uri = f"file://{bucket}/assets"
    assets.prepare(load_config(overrides=NO_JUDGE), uri)
    assert json.loads((bucket / "assets" / "manifest.json").read_text())["assets"]["tokenizer"]

    remote = assets.tokenizer_json(load_config(overrides=[*NO_JUDGE, f"assets.dir={uri}"]))
    assert remote == f"{uri}/tokenizer/tokenizer.json"
    local = tokenizer_file(remote)  # what an executor opens
    assert Path(local).exists() and not local.startswith(str(bucket))
    assert _sha256(Path(local)) == _sha256(prepared / "tokenizer" / "tokenizer.json")
    assert local_path(remote) == local  # copied once per machine, then reused
    prompts = Path(local_path(f"{uri}/prompts/judge"))
    assert sorted(p.name for p in prompts.iterdir()) == sorted(p.name for p in (prepared / "prompts/judge").iterdir())


def test_cli_prepares_the_folder(tmp_path):
    out = tmp_path / "assets"
    result = CliRunner().invoke(app, ["--set", NO_JUDGE[0], "assets", "prepare", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"set assets.dir: {out}" in result.output
    assert (out / "tokenizer" / "tokenizer.json").exists()
