"""The deployment definitions in deploy/: the Databricks Asset Bundle and the EMR steps and job runs.

The Databricks CLI (a Go binary) is not on PyPI and `bundle validate` needs a workspace, so the
bundle is checked offline: against the bundle JSON schema the CLI publishes (`databricks bundle
schema`), then for the rules the schema cannot know: dev and prod targets, every `${var.*}`
defined and used, the wheel the tasks install, one job per stage plus the pipeline job (task order
following the tables each stage reads) and the train job, CPU stages as serverless tasks and GPU
stages on a GPU job cluster of Databricks Runtime 18 LTS in dedicated access mode, and task
parameters that the CLI accepts and that load into a valid pipeline config with the prepared
assets and a release folder. The EMR definitions get the same parameter check.
"""

from __future__ import annotations

import copy
import json
import os
import re
import tomllib
from pathlib import Path

import pytest
import yaml

from etl.config import PROJECT_ROOT, load_config
from etl.jobs import STAGES, STAGES_BY_NAME
from etl.launch import global_options_first
from etl.session import load_profile

BUNDLE = PROJECT_ROOT / "deploy" / "databricks"
EMR = PROJECT_ROOT / "deploy" / "emr"
GPU_STAGES = {"embed", "rate"}
GPU_TASKS = GPU_STAGES | {"train"}
REFERENCE = re.compile(r"\$\{([^}]+)\}")
# The bundle JSON schema of the Databricks CLI: `databricks bundle schema > .cache/databricks/bundle-jsonschema.json`
# (or the file bundle/schema/jsonschema.json of github.com/databricks/cli at a release tag).
BUNDLE_SCHEMA = Path(
    os.environ.get("DATABRICKS_BUNDLE_SCHEMA", PROJECT_ROOT / ".cache" / "databricks" / "bundle-jsonschema.json")
)
BUILTIN_REFERENCES = {
    "bundle.name",
    "bundle.target",
    "workspace.file_path",
    "workspace.root_path",
    "workspace.current_user.userName",
}


def _bundle_files() -> dict[Path, dict]:
    """databricks.yml and every file it includes, each a bundle configuration file."""
    root = yaml.safe_load((BUNDLE / "databricks.yml").read_text())
    files = {BUNDLE / "databricks.yml": root}
    for pattern in root.get("include", []):
        matched = sorted(BUNDLE.glob(pattern))
        assert matched, f"include {pattern!r} matches no file"
        files |= {path: yaml.safe_load(path.read_text()) for path in matched}
    return files


@pytest.fixture(scope="module")
def bundle():
    files = _bundle_files()
    root = files[BUNDLE / "databricks.yml"]
    resources: dict = {}
    for content in files.values():
        for kind, items in (content.get("resources") or {}).items():
            resources.setdefault(kind, {}).update(items)
    return root, resources


def _references(node) -> set[str]:
    if isinstance(node, dict):
        return set().union(*(_references(v) for v in node.values())) if node else set()
    if isinstance(node, list):
        return set().union(*(_references(v) for v in node)) if node else set()
    return set(REFERENCE.findall(node)) if isinstance(node, str) else set()


def _substitute(text: str, root: dict, target: str, resources: dict) -> str:
    variables = {name: spec.get("default") for name, spec in root["variables"].items()}
    variables |= root["targets"][target].get("variables", {})
    known = {
        "bundle.name": root["bundle"]["name"],
        "bundle.target": target,
        "workspace.file_path": "/Workspace/bundle/files",
    }

    def value(reference: str) -> str:
        if reference.startswith("var."):
            return str(variables[reference[4:]])
        if reference.startswith("resources."):
            _, kind, key, field = reference.split(".")
            return _substitute(str(resources[kind][key][field]), root, target, resources)
        return known[reference]

    return REFERENCE.sub(lambda m: value(m[1]), text)


def test_bundle_files_follow_the_published_bundle_schema():
    if not BUNDLE_SCHEMA.exists():
        pytest.skip(f"no bundle JSON schema at {BUNDLE_SCHEMA}: `databricks bundle schema > {BUNDLE_SCHEMA}`")
    import jsonschema
    import regex  # the schema's patterns use \p{L} (Go's RE2 classes), which `re` lacks

    def pattern(validator, expression, instance, schema):
        if validator.is_type(instance, "string") and not regex.search(expression, instance):
            yield jsonschema.ValidationError(f"{instance!r} does not match {expression!r}")

    schema = json.loads(BUNDLE_SCHEMA.read_text())
    validator = jsonschema.validators.extend(jsonschema.validators.validator_for(schema), {"pattern": pattern})(schema)
    files = _bundle_files()
    for path, content in files.items():
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}" for e in validator.iter_errors(content)]
        assert not errors, f"{path.relative_to(PROJECT_ROOT)}:\n" + "\n".join(errors[:10])
    # the schema bites: a misspelt task key and a wrong access mode are rejected
    jobs = copy.deepcopy(files[BUNDLE / "resources" / "jobs.yml"])
    task = jobs["resources"]["jobs"]["finevision_embed"]["tasks"][0]
    assert not list(validator.iter_errors(jobs))
    task["job_cluster"] = task.pop("job_cluster_key")
    assert list(validator.iter_errors(jobs))
    cluster = copy.deepcopy(files[BUNDLE / "resources" / "jobs.yml"])
    cluster["resources"]["jobs"]["finevision_embed"]["job_clusters"][0]["new_cluster"]["data_security_mode"] = (
        "DEDICATED"
    )
    assert list(validator.iter_errors(cluster))


def test_bundle_resources_load_into_databricks_bundles_models(bundle):
    """Every job, schema, volume and experiment loads into the resource models of databricks-bundles
    (Databricks' Python package for bundles, generated from the CLI's bundle schema): an unknown
    field, a misspelt key or a value outside an enum is an error there. Runs everywhere, unlike
    the JSON-schema test above, which needs the schema file."""
    from databricks.bundles.experiments import MlflowExperiment
    from databricks.bundles.jobs import Job
    from databricks.bundles.schemas import Schema
    from databricks.bundles.volumes import Volume

    _, resources = bundle
    models = {"jobs": Job, "schemas": Schema, "volumes": Volume, "experiments": MlflowExperiment}
    assert set(resources) <= set(models), f"resource kinds without a model here: {set(resources) - set(models)}"
    loaded = {
        kind: {key: models[kind].from_dict(copy.deepcopy(item)) for key, item in items.items()}
        for kind, items in resources.items()
    }
    assert loaded["jobs"]["finevision_embed"].tasks and loaded["volumes"] and loaded["schemas"]
    # the models bite: a misspelt task key and an unknown access mode are rejected
    embed = copy.deepcopy(resources["jobs"]["finevision_embed"])
    embed["tasks"][0]["job_cluster"] = embed["tasks"][0].pop("job_cluster_key")
    with pytest.raises(ValueError, match="job_cluster"):
        Job.from_dict(embed)
    embed = copy.deepcopy(resources["jobs"]["finevision_embed"])
    embed["job_clusters"][0]["new_cluster"]["data_security_mode"] = "DEDICATED"
    with pytest.raises(ValueError):
        Job.from_dict(embed)


def test_bundle_targets_and_variables(bundle):
    root, resources = bundle
    assert root["bundle"]["name"]
    assert set(root["targets"]) == {"dev", "prod"}
    assert root["targets"]["dev"]["mode"] == "development" and root["targets"]["dev"]["default"] is True
    assert root["targets"]["prod"]["mode"] == "production"
    for target in root["targets"].values():
        assert set(target.get("variables", {})) <= set(root["variables"])
    assert {"catalog", "schema", "volume"} <= set(root["variables"])
    used = _references(resources) | _references(root)
    variables = {ref[4:] for ref in used if ref.startswith("var.")}
    assert variables <= set(root["variables"]), variables - set(root["variables"])
    assert set(root["variables"]) <= variables, f"defined but never used: {set(root['variables']) - variables}"
    others = {ref for ref in used if not ref.startswith(("var.", "resources."))}
    assert others <= BUILTIN_REFERENCES
    for ref in (r for r in used if r.startswith("resources.")):
        _, kind, key, field = ref.split(".")
        assert field in resources[kind][key], ref
    assert all("description" in spec and "default" in spec for spec in root["variables"].values())


def test_bundle_declares_the_schema_volume_and_experiments_the_jobs_use(bundle):
    root, resources = bundle
    (schema,) = resources["schemas"].values()
    assert schema == schema | {"catalog_name": "${var.catalog}", "name": "${var.schema}"}
    (volume,) = resources["volumes"].values()
    assert volume["catalog_name"] == "${var.catalog}" and volume["name"] == "${var.volume}"
    assert volume["schema_name"] in ("${var.schema}", "${resources.schemas.finevision.name}")
    parameters = {
        p for job in resources["jobs"].values() for t in job["tasks"] for p in t["python_wheel_task"]["parameters"]
    }
    for key in resources["experiments"]:
        assert any(f"${{resources.experiments.{key}.name}}" in p for p in parameters), key


def test_bundle_builds_the_wheel_that_the_tasks_install(bundle):
    root, resources = bundle
    (artifact,) = root["artifacts"].values()
    project = (BUNDLE / artifact["path"]).resolve()
    assert artifact["type"] == "whl" and (project / "pyproject.toml").exists()
    pyproject = tomllib.loads((project / "pyproject.toml").read_text())
    out_dir = (project / re.search(r"--out-dir (\S+)", artifact["build"])[1]).resolve()
    package = pyproject["project"]["name"].replace("-", "_")

    def is_the_wheel(path: str) -> bool:  # resource files resolve relative paths against their own folder
        return (BUNDLE / "resources" / path).resolve().parent == out_dir and path.endswith("*.whl")

    cpu_requirements = pyproject["project"]["optional-dependencies"]["embed-cpu"]
    for job in resources["jobs"].values():
        environments = {e["environment_key"]: e["spec"] for e in job.get("environments", [])}
        for task in job["tasks"]:
            wheel_task = task["python_wheel_task"]
            assert wheel_task["package_name"] == package
            assert wheel_task["entry_point"] in pyproject["project"]["scripts"]
            if "environment_key" in task:  # serverless: the environment installs the wheel and the CPU extra
                dependencies = environments[task["environment_key"]]["dependencies"]
                assert any(is_the_wheel(d) for d in dependencies)
                # decontaminate's SSCD views on CPU: embed-cpu's requirements (tests/test_extras.py: no torch)
                assert [d for d in dependencies if not is_the_wheel(d)] == cpu_requirements, task["task_key"]
            else:
                (library,) = task["libraries"]
                assert is_the_wheel(library["whl"])


def test_bundle_has_a_pipeline_job_one_job_per_stage_and_the_train_job(bundle):
    _, resources = bundle
    jobs = resources["jobs"]
    stages = [s.name for s in STAGES]
    assert set(jobs) == {"finevision_pipeline", "finevision_train"} | {f"finevision_{s}" for s in stages}
    for name in [*stages, "train"]:
        (task,) = jobs[f"finevision_{name}"]["tasks"]
        assert task["task_key"] == name and task["python_wheel_task"]["parameters"][0] == name
    pipeline = {t["task_key"]: t for t in jobs["finevision_pipeline"]["tasks"]}
    assert list(pipeline) == stages
    producers = {table: s.name for s in reversed(STAGES) for table in s.writes}

    def upstream(task_key: str) -> set[str]:
        direct = {d["task_key"] for d in pipeline[task_key].get("depends_on", [])}
        return direct.union(*(upstream(d) for d in direct)) if direct else set()

    for stage in stages:
        needed = {producers[t] for t in STAGES_BY_NAME[stage].reads if producers.get(t) not in (None, stage)}
        assert needed <= upstream(stage), (stage, needed - upstream(stage))


def test_bundle_cpu_stages_are_serverless_and_gpu_stages_on_dedicated_runtime_18_clusters(bundle):
    root, resources = bundle
    for job in resources["jobs"].values():
        clusters = {c["job_cluster_key"]: c["new_cluster"] for c in job.get("job_clusters", [])}
        for task in job["tasks"]:
            if task["task_key"] not in GPU_TASKS:
                assert "environment_key" in task and "job_cluster_key" not in task, task["task_key"]
                options = _parse_cli_args(global_options_first(task["python_wheel_task"]["parameters"]), BUNDLE)
                assert options["profile"] == "serverless", task["task_key"]  # no caching, checkpoints, off-list confs
                assert load_profile(options["profile"]).serverless
                continue
            cluster = clusters[task["job_cluster_key"]]
            runtime = _substitute(cluster["spark_version"], root, "prod", resources)
            # Databricks Runtime 18 LTS carries Spark 4.1, the line pinned in pyproject.toml
            assert runtime.startswith("18.") and "gpu-ml" in runtime, (task["task_key"], runtime)
            assert cluster["data_security_mode"] == "DATA_SECURITY_MODE_DEDICATED"
    # the serverless environment whose client is Spark 4.1 (tests/fixtures/databricks_serverless.yaml, cited there)
    facts = yaml.safe_load((Path(__file__).parent / "fixtures" / "databricks_serverless.yaml").read_text())
    for job in resources["jobs"].values():
        for environment in job.get("environments", []):
            version = _substitute(environment["spec"]["environment_version"], root, "prod", resources)
            assert version == facts["environment_version_spark_4_1"], version


@pytest.mark.parametrize("target", ["dev", "prod"])
def test_bundle_task_parameters_load_into_a_valid_config(bundle, target):
    root, resources = bundle
    volume = _substitute("/Volumes/${var.catalog}/${var.schema}/${var.volume}", root, target, resources)
    for job in resources["jobs"].values():
        for task in job["tasks"]:
            args = [_substitute(a, root, target, resources) for a in task["python_wheel_task"]["parameters"]]
            options = _parse_cli_args(global_options_first(args), BUNDLE)
            assert options["command"] == task["task_key"]
            load_profile(options["profile"])
            config = load_config(options["config"], options["sets"])
            assert config.catalog == f"{root['variables']['catalog']['default']}.{target_schema(root, target)}"
            assert config.data_root.startswith(f"{volume}/")
            # executors take the tokenizer, judge and SSCD model from the prepared assets on the volume
            assert config.assets.dir == f"{volume}/assets"
            assert config.embed.model_path and config.embed.model_path.startswith(f"{volume}/assets/")
            assert config.export.release_dir and config.export.release_dir.startswith(f"{volume}/")  # catalog mode
            assert config.mlflow.experiment.startswith("/Shared/") and config.mlflow.tracking_uri == "databricks"


def target_schema(root: dict, target: str) -> str:
    return root["targets"][target].get("variables", {}).get("schema", root["variables"]["schema"]["default"])


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
        environment = confs["spark.archives"].split(",")[0]
        assert environment.endswith(".tar.gz#environment")
        python_keys = [k for k in confs if k.endswith("PYSPARK_PYTHON")]
        assert python_keys and all(confs[k] == "./environment/bin/python" for k in python_keys)
        assert "delta-spark" in confs["spark.jars"]
        options = _parse_cli_args(global_options_first(cli), EMR)
        assert options["profile"] == "emr" and options["lakehouse"].startswith("s3://")
        load_profile(options["profile"])
        config = load_config(options["config"], options["sets"])
        assert config.data_root.startswith("s3://") and (config.assets.dir or "").startswith("s3://")
        # GPU stages (and the whole pipeline) get the environment with the models, the rest the CPU-only one
        needs_models = options["command"] in GPU_STAGES | {"run"}
        assert environment.rsplit("/", 1)[-1].startswith(
            "finevision_venv_gpu" if needs_models else "finevision_venv_cpu"
        )
        seen.add(options["command"])
    stages = {s.name for s in STAGES}
    assert seen == stages | {"run"}


def test_every_stage_task_and_step_passes_its_pipeline_runs_key(bundle):
    """One pipeline run, one MLflow parent run (etl/tracking.py): every stage task of a bundle job
    passes `--parent-run` with the job run's id, which Databricks gives every task of one run
    (tests/fixtures/pipeline_run_keys.yaml, cited there); every EMR step and job run passes the one
    key the submitter fills in per pipeline run, as docs/clusters.md says. The train task is its
    own MLflow run and passes none."""
    facts = yaml.safe_load((Path(__file__).parent / "fixtures" / "pipeline_run_keys.yaml").read_text())
    _, resources = bundle
    for job in resources["jobs"].values():
        for task in job["tasks"]:
            options = _parse_cli_args(global_options_first(task["python_wheel_task"]["parameters"]), BUNDLE)
            expected = None if task["task_key"] == "train" else facts["databricks"]["job_run_id"]
            assert options.get("parent-run") == expected, task["task_key"]
    keys = set()
    for _name, args in _emr_submissions():
        entry = next(i for i, a in enumerate(args) if a.endswith("/entrypoint.py"))
        keys.add(_parse_cli_args(global_options_first(args[entry + 1 :]), EMR).get("parent-run"))
    (key,) = keys
    assert key and key in (PROJECT_ROOT / "docs" / "clusters.md").read_text()


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


def test_emr_archives_match_the_documented_release():
    """The archives carry delta-spark's Python files at the Delta version of emr-spark-8.0.0 (so `import
    delta` matches the jar on spark.jars) and a Python the release supports (tests/fixtures/emr_release.yaml)."""
    facts = yaml.safe_load((Path(__file__).parent / "fixtures" / "emr_release.yaml").read_text())
    dockerfile = (EMR / "Dockerfile").read_text()
    delta = re.search(r"^ARG DELTA_VERSION=(\S+)$", dockerfile, re.M)[1]
    assert facts["delta"].startswith(f"{delta}-amzn"), (delta, facts["delta"])
    python = re.search(r"uv python install (\S+)", dockerfile)[1]
    assert python in facts["python"]
    assert (
        facts["release_label"] in dockerfile
        and f"--release-label {facts['release_label']}" in (PROJECT_ROOT / "docs" / "clusters.md").read_text()
    )


def test_deploy_files_are_generated_from_the_current_stages():
    """The per-stage files come from deploy/generate.py: after adding a stage, rerun it."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("deploy_generate", PROJECT_ROOT / "deploy" / "generate.py")
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    for path, content in generate.generated().items():
        assert path.read_text() == content, f"{path} is stale: run `python deploy/generate.py`"


# GPUs per instance, from AWS's EC2 G5 page (aws.amazon.com/ec2/instance-types/g5/: g5.xlarge to
# g5.16xlarge 1 A10G, g5.12xlarge and g5.24xlarge 4, g5.48xlarge 8).
GPUS_OF_NODE_TYPE = {"g5.2xlarge": 1, "g5.4xlarge": 1, "g5.12xlarge": 4, "g5.48xlarge": 8}


@pytest.mark.parametrize("target", ["dev", "prod"])
def test_bundle_train_job_runs_torch_distributor_on_every_gpu_of_its_workers(bundle, target):
    """TorchDistributor's documented arguments (pyspark 4.1, pyspark.ml.torch.distributor.TorchDistributor,
    spark.apache.org/docs/latest/api/python/reference/api/pyspark.ml.torch.distributor.TorchDistributor.html;
    Databricks: learn.microsoft.com/azure/databricks/machine-learning/train-model/distributed-training/spark-pytorch-distributor):
    `num_processes` is how many concurrent tasks, "we expect spark.task.gpus = 1 for GPU-enabled training";
    `local_mode=False` trains on the executors, not the driver; `use_gpu` trains on GPUs. With one GPU
    per task, the train job's processes are the GPUs of the job cluster: workers x GPUs per worker."""
    from etl.train.config import load_train_config

    root, resources = bundle
    job = resources["jobs"]["finevision_train"]
    (task,) = job["tasks"]
    (cluster,) = [c["new_cluster"] for c in job["job_clusters"] if c["job_cluster_key"] == task["job_cluster_key"]]
    assert cluster["spark_conf"]["spark.task.resource.gpu.amount"] == "1"  # one GPU per TorchDistributor task
    workers = int(_substitute(str(cluster["num_workers"]), root, target, resources))
    gpus = GPUS_OF_NODE_TYPE[_substitute(cluster["node_type_id"], root, target, resources)]
    args = [_substitute(a, root, target, resources) for a in task["python_wheel_task"]["parameters"]]
    sets = [args[i + 1] for i, a in enumerate(args) if a == "--train-set"]
    config = load_train_config(args[args.index("--train-config") + 1], sets)
    assert not config.distributed.local_mode and config.distributed.use_gpu
    assert config.distributed.world == workers * gpus and workers == (1 if target == "dev" else 2)
    assert _substitute("${var.gpus_per_worker}", root, target, resources) == str(gpus)  # the variable fits the node
    volume = _substitute("/Volumes/${var.catalog}/${var.schema}/${var.volume}", root, target, resources)
    # every worker reads the snapshot and writes the model through the volume, not the driver's disk
    assert config.data.snapshot_dir == f"{volume}/training" and config.output_dir.startswith(f"{volume}/")
    assert config.model.init == "smollm2"  # its language model: the prepared assets (assets.dir, checked above)
