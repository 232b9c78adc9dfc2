"""Launching on clusters: argument order (etl/launch.py), profiles, stage resource profiles
(etl/resources.py) and the tokenizer shipped to executors (udfs/tokens.py)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from etl.config import CONF_DIR, ConfigError, TokenizerConfig
from etl.launch import global_options_first, main
from etl.resources import stage_resource_profile, stage_resources
from etl.session import DELTA_EXTENSIONS, load_profile
from udfs.tokens import count_tokens, load_tokenizer, prepare_tokenizer, tokenizer_file


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["embed", "--config", "c.yaml", "--profile", "emr", "--set", "a=1"],
            ["--config", "c.yaml", "--profile", "emr", "--set", "a=1", "embed"],
        ),
        (
            ["run", "--stage", "embed", "--profile=emr", "--dry-run", "-v"],
            ["--profile=emr", "--dry-run", "-v", "run", "--stage", "embed"],
        ),
        (
            ["--profile", "local", "ingest", "--source", "photos", "-c", "p.yaml"],
            ["--profile", "local", "-c", "p.yaml", "ingest", "--source", "photos"],
        ),
        (["review", "duplicates", "--limit", "5"], ["review", "duplicates", "--limit", "5"]),
    ],
)
def test_global_options_move_before_the_command(argv, expected):
    assert global_options_first(argv) == expected


def test_options_after_the_command_reach_the_cli(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["clean", "--profile", "local", "--set", "clean.max_side=big"])
    assert exit_info.value.code == 2
    assert "clean.max_side" in capsys.readouterr().err


def test_every_profile_loads_and_cluster_profiles_leave_master_and_jars_to_spark_submit(tmp_path):
    names = sorted(p.stem for p in (CONF_DIR / "profiles").glob("*.yaml"))
    assert {"local", "standalone", "databricks", "emr"} <= set(names)
    for name in names:
        profile = load_profile(name)
        if name != "local":
            assert profile.master is None and profile.delta_jars == "provided"
    for name in ("standalone", "emr"):
        assert DELTA_EXTENSIONS.items() <= load_profile(name).conf.items()
    custom = tmp_path / "mine.yaml"
    custom.write_text("master: null\nconf:\n  spark.finevision.stage.embed.task.cpus: 2\n")
    assert load_profile(str(custom)).conf == {"spark.finevision.stage.embed.task.cpus": "2"}
    with pytest.raises(ConfigError, match="no such profile"):
        load_profile("nowhere")


def test_stage_resources_come_from_spark_confs_and_local_mode_gets_no_profile(spark):
    keys = ["spark.finevision.stage.embed.task.gpus", "spark.finevision.stage.embed.task.cpus"]
    try:
        assert stage_resources(spark, "embed").is_empty() and stage_resource_profile(spark, "embed") is None
        spark.conf.set(keys[0], "0.5")
        spark.conf.set(keys[1], "2")
        wanted = stage_resources(spark, "embed")
        assert (wanted.task_gpus, wanted.task_cpus) == (0.5, 2)
        assert stage_resources(spark, "dedup").is_empty()
        assert stage_resource_profile(spark, "embed") is None  # local[*] cannot schedule per stage
        spark.conf.set(keys[1], "two")
        with pytest.raises(ConfigError, match=r"task\.cpus: expected a int"):
            stage_resources(spark, "embed")
        spark.conf.set(keys[1], "0")
        with pytest.raises(ConfigError, match="must be > 0"):
            stage_resources(spark, "embed")
    finally:
        for key in keys:
            spark.conf.unset(key)


def test_executors_open_the_tokenizer_the_job_shipped(spark):
    tok = TokenizerConfig()
    path = prepare_tokenizer(tok.path, tok.gguf_package, tok.gguf_file, tok.cache_dir)
    spark.sparkContext.addFile(path)  # what etl/jobs/clean.py does
    elsewhere = "/no/such/driver/folder/tokenizer.json"  # the driver's path, as a remote node sees it
    with pytest.raises(FileNotFoundError, match="no copy was shipped"):
        tokenizer_file("/no/such/driver/folder/never-shipped.json")

    def count(batches):
        for batch in batches:
            tokenizer = load_tokenizer(elsewhere)
            yield pd.DataFrame({"n": count_tokens(tokenizer, batch["text"].tolist())})

    texts = ["a chart of monthly rainfall", "how many red squares are there?"]
    got = [
        r["n"]
        for r in spark.createDataFrame([(t,) for t in texts], "text string")
        .coalesce(1)
        .mapInPandas(count, "n long")
        .collect()
    ]
    assert got == count_tokens(load_tokenizer(path), texts)


def test_stage_requests_ask_for_gpus_only_where_executors_have_them():
    from etl.resources import StageResources, stage_requests

    gpu_task = StageResources(task_gpus=1)
    assert stage_requests(gpu_task, "local[2]", 1, False, 1) is None  # local mode: no stage-level scheduling
    assert stage_requests(StageResources(), "yarn", 1, True, 1) is None  # nothing asked for
    on_gpus = stage_requests(gpu_task, "spark://m:7077", 1, False, 2)
    assert on_gpus.task == {"cpus": 2, "gpu": 1} and on_gpus.executor == {}
    on_cpus = stage_requests(gpu_task, "yarn", 0, True, 1)  # a CPU cluster: run on CPU, never wait for a GPU
    assert on_cpus.task == {"cpus": 1} and on_cpus.executor == {}
    mixed = stage_requests(
        StageResources(task_cpus=4, task_gpus=0.5, executor_cores=8, executor_gpus=1), "yarn", 0, True, 1
    )
    assert mixed.task == {"cpus": 4, "gpu": 0.5} and mixed.executor == {"cores": 8, "gpu": 1}
    static = stage_requests(StageResources(task_gpus=1, executor_gpus=1), "k8s://api", 1, False, 1)
    assert static.executor == {}  # without dynamic allocation the default executors are reused


def test_tokenizers_ship_under_content_addressed_names(spark, tmp_path):
    from pyspark import SparkFiles

    from etl.specs import ship_to_executors

    first, second = tmp_path / "a" / "tokenizer.json", tmp_path / "b" / "tokenizer.json"
    for path, text in ((first, '{"one": 1}'), (second, '{"two": 2}')):
        path.parent.mkdir()
        path.write_text(text)
    shipped = [ship_to_executors(spark, str(path)) for path in (first, second)]
    assert shipped[0] != shipped[1] and ship_to_executors(spark, str(first)) == shipped[0]  # same content, same name
    names = [Path(path).name for path in shipped]
    read = spark.sparkContext.parallelize([0], 1).map(lambda _: [open(SparkFiles.get(n)).read() for n in names]).first()
    assert read == ['{"one": 1}', '{"two": 2}']
