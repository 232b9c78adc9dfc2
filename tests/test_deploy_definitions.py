"""The deployment definitions in deploy/: the Databricks Asset Bundle and the EMR steps and job runs.

The Databricks CLI (a Go binary) is not on PyPI or npm and `bundle validate` needs a workspace, so
these tests check the rules a bundle must follow that can be checked offline: known top-level and
target keys, dev and prod targets, every `${var.*}` defined (and every variable used), every task
on a defined job cluster with the wheel as a library and an entry point the wheel declares, one
job per stage plus the pipeline job whose task order follows the tables each stage reads, GPU
stages on the GPU cluster, and task parameters that the CLI accepts and that load into a valid
pipeline config. The EMR definitions get the same parameter check.
"""

from __future__ import annotations

import json
import re
import tomllib

import pytest
import yaml

from etl.config import PROJECT_ROOT, load_config
from etl.jobs import STAGES, STAGES_BY_NAME
from etl.launch import global_options_first
from etl.session import load_profile

BUNDLE = PROJECT_ROOT / "deploy" / "databricks"
EMR = PROJECT_ROOT / "deploy" / "emr"
GPU_STAGES = {"embed", "rate"}
REFERENCE = re.compile(r"\$\{([^}]+)\}")
# Top-level keys of databricks.yml and keys of a target, as the bundle schema defines them.
BUNDLE_KEYS = {
    "bundle",
    "include",
    "artifacts",
    "variables",
    "targets",
    "resources",
    "workspace",
    "sync",
    "permissions",
    "run_as",
    "presets",
    "experimental",
    "scripts",
    "python",
}
TARGET_KEYS = {
    "mode",
    "default",
    "workspace",
    "variables",
    "resources",
    "artifacts",
    "bundle",
    "cluster_id",
    "compute_id",
    "git",
    "permissions",
    "presets",
    "run_as",
    "sync",
}
TASK_KEYS = {
    "task_key",
    "depends_on",
    "job_cluster_key",
    "python_wheel_task",
    "libraries",
    "timeout_seconds",
    "max_retries",
    "min_retry_interval_millis",
    "retry_on_timeout",
    "email_notifications",
    "run_if",
}
BUILTIN_REFERENCES = {
    "bundle.name",
    "bundle.target",
    "workspace.file_path",
    "workspace.root_path",
    "workspace.current_user.userName",
}


@pytest.fixture(scope="module")
def bundle():
    root = yaml.safe_load((BUNDLE / "databricks.yml").read_text())
    resources: dict = {}
    for pattern in root.get("include", []):
        files = sorted(BUNDLE.glob(pattern))
        assert files, f"include {pattern!r} matches no file"
        for path in files:
            for kind, items in yaml.safe_load(path.read_text())["resources"].items():
                resources.setdefault(kind, {}).update(items)
    return root, resources


def _references(node) -> set[str]:
    if isinstance(node, dict):
        return set().union(*(_references(v) for v in node.values())) if node else set()
    if isinstance(node, list):
        return set().union(*(_references(v) for v in node)) if node else set()
    return set(REFERENCE.findall(node)) if isinstance(node, str) else set()


def _substitute(text: str, root: dict, target: str) -> str:
    variables = {name: spec.get("default") for name, spec in root["variables"].items()}
    variables |= root["targets"][target].get("variables", {})
    known = {
        "bundle.name": root["bundle"]["name"],
        "bundle.target": target,
        "workspace.file_path": "/Workspace/bundle/files",
    }
    return REFERENCE.sub(lambda m: str(variables[m[1][4:]] if m[1].startswith("var.") else known[m[1]]), text)


def test_bundle_top_level_targets_and_variables(bundle):
    root, resources = bundle
    assert set(root) <= BUNDLE_KEYS, set(root) - BUNDLE_KEYS
    assert root["bundle"]["name"]
    assert set(root["targets"]) == {"dev", "prod"}
    assert root["targets"]["dev"]["mode"] == "development" and root["targets"]["dev"]["default"] is True
    assert root["targets"]["prod"]["mode"] == "production"
    for target in root["targets"].values():
        assert set(target) <= TARGET_KEYS
        assert set(target.get("variables", {})) <= set(root["variables"])
    assert {"catalog", "schema"} <= set(root["variables"])
    used = _references(resources) | _references(root)
    variables = {ref[4:] for ref in used if ref.startswith("var.")}
    assert variables <= set(root["variables"]), variables - set(root["variables"])
    assert set(root["variables"]) <= variables, f"defined but never used: {set(root['variables']) - variables}"
    assert {ref for ref in used if not ref.startswith("var.")} <= BUILTIN_REFERENCES
    assert all("description" in spec and "default" in spec for spec in root["variables"].values())


def test_bundle_builds_the_wheel_that_the_tasks_install(bundle):
    root, resources = bundle
    (artifact,) = root["artifacts"].values()
    project = (BUNDLE / artifact["path"]).resolve()
    assert artifact["type"] == "whl" and (project / "pyproject.toml").exists()
    pyproject = tomllib.loads((project / "pyproject.toml").read_text())
    out_dir = re.search(r"--out-dir (\S+)", artifact["build"])[1]
    package = pyproject["project"]["name"].replace("-", "_")
    for job in resources["jobs"].values():
        for task in job["tasks"]:
            assert set(task) <= TASK_KEYS, set(task) - TASK_KEYS
            wheel_task = task["python_wheel_task"]
            assert wheel_task["package_name"] == package
            assert wheel_task["entry_point"] in pyproject["project"]["scripts"]
            (library,) = task["libraries"]
            # resource files resolve relative paths against their own folder (resources/)
            assert (BUNDLE / "resources" / library["whl"]).resolve().parent == (project / out_dir).resolve()
            assert library["whl"].endswith("*.whl")


def test_bundle_has_a_pipeline_job_and_one_job_per_stage(bundle):
    _, resources = bundle
    jobs = resources["jobs"]
    stages = [s.name for s in STAGES]
    assert set(jobs) == {"finevision_pipeline"} | {f"finevision_{s}" for s in stages}
    for stage in stages:
        (task,) = jobs[f"finevision_{stage}"]["tasks"]
        assert task["task_key"] == stage and task["python_wheel_task"]["parameters"][0] == stage
    pipeline = {t["task_key"]: t for t in jobs["finevision_pipeline"]["tasks"]}
    assert list(pipeline) == stages
    producers = {table: s.name for s in reversed(STAGES) for table in s.writes}

    def upstream(task_key: str) -> set[str]:
        direct = {d["task_key"] for d in pipeline[task_key].get("depends_on", [])}
        return direct.union(*(upstream(d) for d in direct)) if direct else set()

    for stage in stages:
        assert pipeline[stage]["python_wheel_task"]["parameters"][0] == stage
        needed = {producers[t] for t in STAGES_BY_NAME[stage].reads if producers.get(t) not in (None, stage)}
        assert needed <= upstream(stage), (stage, needed - upstream(stage))


def test_bundle_gpu_stages_run_on_the_gpu_cluster_and_the_rest_on_cpu(bundle):
    root, resources = bundle
    for job in resources["jobs"].values():
        clusters = {c["job_cluster_key"]: c["new_cluster"] for c in job["job_clusters"]}
        for cluster in clusters.values():
            assert {"spark_version", "node_type_id"} <= set(cluster) and (
                "num_workers" in cluster or "autoscale" in cluster
            )
        for task in job["tasks"]:
            cluster = clusters[task["job_cluster_key"]]
            runtime = _substitute(cluster["spark_version"], root, "prod")
            assert ("gpu" in runtime) == (task["task_key"] in GPU_STAGES), (task["task_key"], runtime)
            assert re.match(r"\d+\.\d+\.x-", runtime) and int(runtime.split(".")[0]) >= 16  # Spark 4 runtimes


@pytest.mark.parametrize("target", ["dev", "prod"])
def test_bundle_task_parameters_load_into_a_valid_config(bundle, target):
    root, resources = bundle
    for job in resources["jobs"].values():
        for task in job["tasks"]:
            args = [_substitute(a, root, target) for a in task["python_wheel_task"]["parameters"]]
            options = _parse_cli_args(global_options_first(args), BUNDLE)
            assert options["command"] == task["task_key"]
            load_profile(options["profile"])
            config = load_config(options["config"], options["sets"])
            assert (
                config.catalog
                == f"{root['variables']['catalog']['default']}.{_substitute('${var.schema}', root, target)}"
            )
            assert config.data_root.startswith("/Volumes/")


def _parse_cli_args(args: list[str], local_dir) -> dict:
    """The CLI's global options, which global_options_first put before the command."""
    options = {"sets": [], "profile": "local", "config": None, "lakehouse": None}
    i = 0
    while args[i].startswith("-"):
        name, value = args[i], args[i + 1]
        if name == "--set":
            options["sets"].append(value)
        else:
            options[name.lstrip("-")] = value
        i += 2
    options["command"] = args[i]
    if options["config"]:
        for prefix in ("/Workspace/bundle/files/", ""):  # bundle files are synced from the bundle folder
            if options["config"].startswith(prefix):
                options["config"] = local_dir / options["config"][len(prefix) :]
                break
    return options


def _emr_submissions():
    for step in json.loads((EMR / "steps.json").read_text()) + json.loads((EMR / "steps-pipeline.json").read_text()):
        assert step["Type"] == "Spark" and step["ActionOnFailure"]
        yield step["Name"], step["Args"]
    for name, run in json.loads((EMR / "serverless-job-runs.json").read_text()).items():
        submit = run["jobDriver"]["sparkSubmit"]
        yield name, submit["sparkSubmitParameters"].split() + [submit["entryPoint"], *submit["entryPointArguments"]]


def test_emr_steps_and_job_runs_launch_the_entrypoint_with_a_valid_config():
    seen = set()
    for _name, args in _emr_submissions():
        entry = next(i for i, a in enumerate(args) if a.endswith("/entrypoint.py"))
        submit, cli = args[:entry], args[entry + 1 :]
        confs = dict(submit[i + 1].split("=", 1) for i, a in enumerate(submit) if a == "--conf")
        assert confs["spark.archives"].split(",")[0].endswith(".tar.gz#environment")
        python_keys = [k for k in confs if k.endswith("PYSPARK_PYTHON")]
        assert python_keys and all(confs[k] == "./environment/bin/python" for k in python_keys)
        assert "delta-spark" in confs["spark.jars"]
        options = _parse_cli_args(global_options_first(cli), EMR)
        assert options["profile"] == "emr" and options["lakehouse"].startswith("s3://")
        load_profile(options["profile"])
        config = load_config(options["config"], options["sets"])
        assert config.data_root.startswith("s3://")
        seen.add(options["command"])
    stages = {s.name for s in STAGES}
    assert seen == stages | {"run"}


def test_emr_serverless_runs_only_cpu_stages_and_the_gpu_fleet_schedules_gpus():
    runs = json.loads((EMR / "serverless-job-runs.json").read_text())
    assert {run["jobDriver"]["sparkSubmit"]["entryPointArguments"][0] for run in runs.values()} == {
        s.name for s in STAGES if s.name not in GPU_STAGES
    }
    configurations = {c["Classification"]: c for c in json.loads((EMR / "configurations-gpu.json").read_text())}
    assert configurations["yarn-site"]["Properties"]["yarn.resource-types"] == "yarn.io/gpu"
    assert (
        "DominantResourceCalculator"
        in configurations["capacity-scheduler"]["Properties"]["yarn.scheduler.capacity.resource-calculator"]
    )
    spark_defaults = configurations["spark-defaults"]["Properties"]
    assert (
        float(spark_defaults["spark.executor.resource.gpu.amount"]) >= 1
        and spark_defaults["spark.executor.resource.gpu.discoveryScript"]
    )
    fleets = json.loads((EMR / "instance-fleets-gpu.json").read_text())
    core = next(f for f in fleets if f["InstanceFleetType"] == "CORE")
    assert all(
        t["InstanceType"].startswith(("g4dn", "g5", "g6", "p3", "p4", "p5")) for t in core["InstanceTypeConfigs"]
    )


def test_deploy_files_are_generated_from_the_current_stages():
    """The per-stage files come from deploy/generate.py: after adding a stage, rerun it."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("deploy_generate", PROJECT_ROOT / "deploy" / "generate.py")
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    for path, content in generate.generated().items():
        assert path.read_text() == content, f"{path} is stale: run `python deploy/generate.py`"
